//! A new user's first minute: coupon-api started on a stack that has never
//! run it (no schema, no issue script for its prefix, fresh topics), then
//! used at once. The README's "Try it" and "Running a promotion" walkthroughs
//! run as written, read from README.md, and every answer must be the one it shows; and a spike right
//! after readiness sells exactly the stock with no `503`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use coupon_e2e::process::bin_dir;
use coupon_e2e::walkthrough::{self, Step};
use coupon_e2e::world::World;
use coupon_infra::auth::{DEV_ADMIN_TOKEN, DEV_AUDIENCE, DEV_JWT_SECRET};

/// Marks where each call's output starts in the script's output.
const MARK: &str = "=== step";

/// The walkthrough as one bash script: `curl` also prints the status, `make
/// -s token CUSTOMER=n` (or `SERVICE=name`) mints with the debug build of
/// coupon-loadgen (as `make token` does with the release one), and the
/// README's address is the test's API.
fn script(steps: &[Step], api_addr: &str) -> String {
    let loadgen = bin_dir().join("coupon-loadgen");
    let mut script = format!(
        "set -u\n\
         curl() {{ command curl -w '\\n%{{http_code}}\\n' \"$@\"; }}\n\
         make() {{ [ \"$1 $2\" = '-s token' ] || {{ echo \"unexpected make $*\" >&2; return 97; }}; \
         case $3 in CUSTOMER=*) {loadgen:?} token --customer \"${{3#CUSTOMER=}}\";; \
         SERVICE=*) {loadgen:?} token --service \"${{3#SERVICE=}}\";; *) return 98;; esac; }}\n"
    );
    for (n, step) in steps.iter().enumerate() {
        if step.expected.is_some() {
            script.push_str(&format!("printf '\\n{MARK} {n}\\n'\n"));
        }
        script.push_str(&step.command.replace("localhost:8080", api_addr));
        script.push('\n');
    }
    script
}

/// Each call's (status, body) by step number, from the script's output.
fn answers(output: &str) -> Vec<(usize, u16, String)> {
    output
        .split(&format!("\n{MARK} "))
        .skip(1)
        .map(|chunk| {
            let (n, rest) = chunk.split_once('\n').unwrap_or((chunk, ""));
            let mut lines: Vec<&str> = rest.trim_end().lines().collect();
            let status = lines.pop().and_then(|line| line.trim().parse().ok()).unwrap_or(0);
            (n.trim().parse().expect("a step number"), status, lines.join("\n"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_walkthrough_answers_as_shown_on_a_stack_started_from_nothing() {
    let mut world = World::from_nothing("newcomer").await;
    // The credentials `make run` gives the services (scripts/lib/dev.env):
    // the walkthrough uses its admin token, and `make token` signs with them.
    for (key, value) in [
        ("COUPON__DEV", "true"),
        ("COUPON__ADMIN__TOKEN", DEV_ADMIN_TOKEN),
        ("COUPON__AUTH__JWT_SECRET", DEV_JWT_SECRET),
        ("COUPON__AUTH__JWT_AUDIENCE", DEV_AUDIENCE),
    ] {
        world.overrides.insert(key.into(), value.into());
    }
    let readme = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&readme).expect("reading README.md");
    let mut steps = Vec::new();
    for section in ["Try it", "Running a promotion"] {
        for block in walkthrough::shell_blocks(&readme, section).unwrap_or_else(|err| panic!("{section}: {err:#}")) {
            steps.extend(walkthrough::steps(&block).unwrap_or_else(|err| panic!("{err:#}")));
        }
    }
    assert!(steps.iter().filter(|step| step.expected.is_some()).count() >= 10, "{steps:#?}");

    // coupon-api alone first, on a database without its schema, as the
    // issue that asked for this test found it; then the writer.
    let _api = world.start_api().await;
    let _writer = world.start_writer(1).await;
    let api_addr = world.api_urls().trim_start_matches("http://").to_string();
    let output = Command::new("bash").arg("-c").arg(script(&steps, &api_addr)).output().expect("running bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));

    let answers = answers(&stdout);
    assert_eq!(answers.len(), steps.iter().filter(|step| step.expected.is_some()).count(), "{stdout}");
    let wrong: Vec<String> = answers
        .iter()
        .filter_map(|(n, status, body)| {
            let step = &steps[*n];
            let expected = step.expected.as_ref().expect("only calls are marked");
            walkthrough::mismatch(expected, *status, body).map(|why| {
                format!("{}\n  README: # {}\n  got: {status} {body}\n  {why}", step.command, expected.comment)
            })
        })
        .collect();
    assert!(wrong.is_empty(), "the walkthrough answers differently from the README:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spike_right_after_readiness_on_a_stack_started_from_nothing_sells_exactly_the_stock() {
    const STOCK: u64 = 200;
    let world = World::from_nothing("newcomer spike").await;
    let _api = world.start_api().await;
    let coupons = world.create_coupons(1, STOCK).await;
    let spike = world.spike(&coupons, 2_000, Arc::default()).await;

    let count = |status: u16| spike.answers.iter().filter(|answer| answer.status == Some(status)).count() as u64;
    assert_eq!(count(503), 0, "no request is turned away while the new stack starts");
    assert_eq!(count(201), STOCK, "exactly the stock is issued");
}

/// Weak or public credentials stop coupon-api at start, naming the setting:
/// a newcomer who copies `make run`'s values into production is told at once.
#[tokio::test(flavor = "multi_thread")]
async fn weak_or_development_credentials_stop_coupon_api_at_start_naming_the_setting() {
    const STRONG: &str = "a-production-secret-of-at-least-32-bytes";
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("COUPON__AUTH__JWT_SECRET", "0123456789abcdef")], "auth.jwt_secret"),
        (&[("COUPON__ADMIN__TOKEN", DEV_ADMIN_TOKEN)], "admin.token"),
        (&[("COUPON__ADMIN__TOKEN", "12345678")], "admin.token"),
        (&[("COUPON__AUTH__MODE", "gateway")], "auth.gateway_secret"),
    ];
    for (vars, setting) in cases {
        let output = tokio::process::Command::new(bin_dir().join("coupon-api"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs([("COUPON__AUTH__JWT_SECRET", STRONG), ("COUPON__AUTH__JWT_AUDIENCE", "coupon-api")])
            .envs(vars.iter().copied())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(std::time::Duration::from_secs(30), output)
            .await
            .expect("coupon-api exits at once")
            .expect("running coupon-api");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{vars:?} started");
        assert!(stderr.contains(&format!("`{setting}`")), "{vars:?}: {stderr}");
    }
}
