//! Network faults between processes on loopback, made with nftables (Debian's
//! `nft`, installed by `make setup`; root only): one direction of one TCP
//! connection cut, as a partition drops it, while everything else on the
//! machine keeps flowing. The kernel drops the packets, so neither end sees an
//! error: the sender retransmits into the void and the receiver waits, which is
//! what a lagging replica behind a broken link looks like.
//!
//! Each fault is a table of its own, removed when its value is dropped, so a
//! test leaves no rule behind.

use std::process::Command;

use anyhow::{bail, Context};

use crate::unique_name;

/// Drops every packet of one TCP direction on loopback while it lives.
pub struct LinkCut {
    table: String,
}

impl LinkCut {
    /// Cuts the direction from local port `from` to local port `to`: for a
    /// connection from an ephemeral port to a server, the server's replies
    /// (`from` = the server's port) or the client's requests (`to` = it).
    pub fn one_way(from: u16, to: u16) -> anyhow::Result<Self> {
        let table = unique_name("coupon_cut");
        let rules = format!(
            "table inet {table} {{\n\
             \tchain output {{\n\
             \t\ttype filter hook output priority 0; policy accept;\n\
             \t\ttcp sport {from} tcp dport {to} drop\n\
             \t}}\n\
             }}\n"
        );
        nft(&["-f", "-"], Some(&rules)).with_context(|| format!("cutting 127.0.0.1:{from} -> 127.0.0.1:{to}"))?;
        Ok(Self { table })
    }

    /// Lets the packets through again.
    pub fn heal(self) {}
}

impl Drop for LinkCut {
    fn drop(&mut self) {
        if let Err(err) = nft(&["delete", "table", "inet", &self.table], None) {
            eprintln!("could not remove nftables table {}: {err:#}", self.table);
        }
    }
}

fn nft(args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft; is nftables installed (make setup) and is this root?")?;
    if let Some(input) = stdin {
        child.stdin.take().expect("piped").write_all(input.as_bytes())?;
    }
    drop(child.stdin.take());
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("nft {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_cut_direction_delivers_nothing_until_healed_and_the_other_keeps_flowing() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
        let server_port = listener.local_addr().expect("an address").port();
        let mut client = TcpStream::connect(("127.0.0.1", server_port)).expect("connected");
        let (mut server, _) = listener.accept().expect("accepted");
        let client_port = client.local_addr().expect("an address").port();
        for stream in [&client, &server] {
            stream.set_read_timeout(Some(Duration::from_millis(500))).expect("a timeout");
        }
        let mut byte = [0u8; 1];

        let cut = LinkCut::one_way(server_port, client_port).expect("a cut");
        server.write_all(b"x").expect("written into the kernel's buffer");
        assert!(client.read_exact(&mut byte).is_err(), "the server's byte crossed the cut");
        client.write_all(b"y").expect("written");
        server.read_exact(&mut byte).expect("the other direction flows");
        assert_eq!(&byte, b"y");

        cut.heal();
        // TCP retransmits what was dropped: the byte arrives once the path is open.
        client.set_read_timeout(Some(Duration::from_secs(10))).expect("a timeout");
        client.read_exact(&mut byte).expect("delivered after the heal");
        assert_eq!(&byte, b"x");
    }
}
