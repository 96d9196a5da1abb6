//! libpq's `sslmode`s against the secure stack's PostgreSQL (`make
//! up-secure`: TLS only, a client certificate and a password), reached by a
//! name its certificate does not carry (`hostaddr` gives the address), so
//! each mode's check of the name shows.

use std::path::PathBuf;

use coupon_infra::db;

/// The secure stack's database URL (it names the CA and the client's certificate).
fn secure_url() -> url::Url {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.stack/secure/secrets/database-url");
    let url =
        std::fs::read_to_string(&file).unwrap_or_else(|err| panic!("{}: {err}; run make up-secure", file.display()));
    url::Url::parse(url.trim()).expect("the secure stack's database URL")
}

/// The URL with `host` as the name and the mode set; the address stays 127.0.0.1.
fn with(host: &str, mode: &str, keep_root: bool) -> String {
    let mut url = secure_url();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| key != "sslmode" && (keep_root || key != "sslrootcert"))
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    url.set_host(Some(host)).expect("a host");
    url.query_pairs_mut().clear().extend_pairs(kept).append_pair("sslmode", mode).append_pair("hostaddr", "127.0.0.1");
    url.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sslmode_checks_what_libpq_checks() {
    // The certificate is for 127.0.0.1 and localhost.
    assert!(db::connect(&with("localhost", "verify-full", true)).await.is_ok(), "the right name");
    let err = db::connect(&with("db.example.com", "verify-full", true)).await.err().expect("a name it does not carry");
    assert!(err.to_string().contains("certificate not valid for name \"db.example.com\""), "{err}");
    // verify-ca checks the chain only; require and prefer check nothing.
    assert!(db::connect(&with("db.example.com", "verify-ca", true)).await.is_ok(), "verify-ca ignores the name");
    assert!(db::connect(&with("db.example.com", "require", false)).await.is_ok(), "require without a root");
    assert!(db::connect(&with("db.example.com", "prefer", false)).await.is_ok(), "prefer without a root");
    // A wrong root fails verify-ca, and require with a root verifies the chain, as libpq does.
    let other_ca = secure_url()
        .query_pairs()
        .find(|(key, _)| key == "sslrootcert")
        .map(|(_, ca)| ca.replace("/ca.crt", "/other-ca.crt"))
        .expect("the URL names its CA");
    for mode in ["verify-ca", "require"] {
        let wrong_root = with("localhost", mode, false) + "&sslrootcert=" + &other_ca;
        let err = db::connect(&wrong_root).await.err().expect("a root that did not sign it");
        assert!(err.to_string().contains("UnknownIssuer"), "{mode}: {err}");
    }
}
