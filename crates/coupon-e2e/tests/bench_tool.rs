//! The benchmark tool at toy size against the real services, so it does not
//! rot: a spike record per issuance mode, a steady-traffic record, and the
//! report with its tables and plots built from them. It asserts what the
//! tool writes, never how fast anything ran. The soak tool likewise, with a
//! flood of seconds, and the many-coupons tool with a few dozen coupons.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use coupon_e2e::process::{bin_dir, log_dir};
use coupon_e2e::world::{World, ADMIN_TOKEN, AUDIENCE, JWT_SECRET};

fn loadgen(world: &World, args: &[&str]) -> String {
    let output = Command::new(bin_dir().join("coupon-loadgen"))
        .args(args)
        .env("COUPON_API", world.api_urls())
        .env("COUPON_API_MANAGEMENT", world.management_urls())
        .env("COUPON__ADMIN__TOKEN", ADMIN_TOKEN)
        .env("COUPON__AUTH__JWT_SECRET", JWT_SECRET)
        .env("COUPON__AUTH__JWT_AUDIENCE", AUDIENCE)
        .env("COUPON__DATABASE__URL", world.db.url())
        .output()
        .expect("running coupon-loadgen (built by cargo build --workspace)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "coupon-loadgen {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A written page with its table rows' padding (comfy-table aligns the
/// columns) cut to one space, so a row reads `| a | b |` whatever the widths.
fn read_unpadded(page: &Path) -> String {
    let md = std::fs::read_to_string(page).unwrap();
    let lines: Vec<String> = md
        .lines()
        .map(|line| {
            if line.starts_with('|') {
                line.split_whitespace().collect::<Vec<_>>().join(" ")
            } else {
                line.to_string()
            }
        })
        .collect();
    lines.join("\n") + "\n"
}

// A test: the tool's whole run, then its outputs one by one.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn the_benchmark_tool_records_both_modes_and_writes_its_report() {
    let mut world = World::new("bench tool").await;
    let dir = log_dir().join(format!("bench-tool-{}", std::process::id()));
    let runs = dir.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let _writer = world.start_writer(1).await;

    for mode in ["kafka", "sync-db"] {
        world.overrides.insert("COUPON__ISSUE__MODE".into(), mode.into());
        let api = world.start_api().await;
        let record = runs.join(format!("{mode}-1.json"));
        let spike = ["spike", "--customers", "300", "--stock", "100", "--concurrency", "16"];
        let summary = loadgen(&world, &[&spike[..], &["--mode", mode, "--json", path(&record)]].concat());
        for promise in ["never oversell", "never lose an issued coupon", "never grant one twice"] {
            assert!(summary.lines().any(|l| l.starts_with(promise) && l.contains("held")), "{summary}");
        }
        if mode == "kafka" {
            let trickle = dir.join("trickle.json");
            let line = loadgen(&world, &["trickle", "--rate", "50", "--seconds", "2", "--json", path(&trickle)]);
            assert!(line.starts_with("100 issued at 50/s"), "{line}");
            let mut point: serde_json::Value = serde_json::from_slice(&std::fs::read(&trickle).unwrap()).unwrap();
            point["batch"] = 100.into();
            point["wait_ms"] = 500.into();
            let ceilings = serde_json::json!({
                "redis_lua_calls_per_s": 50000.0,
                "pg_rows_per_s": { "100": 40000.0 },
                "writer_rows_per_s": { "100": 36000.0 },
                "writer_limits_sweep": [point],
                "machine": "test",
                "command": "bench tool test",
            });
            std::fs::write(dir.join("ceilings.json"), ceilings.to_string()).unwrap();
        }
        api.terminate(Duration::from_secs(30)).await.expect("coupon-api stops on SIGTERM");
    }

    let report = dir.join("BENCHMARK.md");
    let plots = dir.join("plots");
    let ceilings = dir.join("ceilings.json");
    loadgen(
        &world,
        &[
            "report",
            "--runs",
            path(&runs),
            "--ceilings",
            path(&ceilings),
            "--output",
            path(&report),
            "--plots",
            path(&plots),
        ],
    );
    let md = read_unpadded(&report);
    for expected in [
        "| kafka | 1 | 330 | 100 |",
        "| sync-db | 1 | 330 | 100 |",
        "| DB write transactions per 10,000 issued |",
        "## Where the CPU went during each spike",
        "Batch 100: pgbench 40000 rows/s; writer draining a backlog 36000 rows/s = 90% of it",
        "| 100 | 500 |",
    ] {
        assert!(md.contains(expected), "the report lacks {expected:?}:\n{md}");
    }
    for plot in ["latency.svg", "throughput.svg", "lag.svg"] {
        assert!(plots.join(plot).metadata().unwrap().len() > 0, "{plot} is empty");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_soak_tool_watches_the_writer_and_writes_its_section_beside_the_benchmark() {
    let world = World::new("soak tool").await;
    let dir = log_dir().join(format!("soak-tool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_writer, writer_metrics) = world.start_writer_watched(1).await;
    let api = world.start_api().await;
    let page = dir.join("BENCHMARK.md");
    std::fs::write(&page, "# Spike benchmark\n\nthe spike tables\n").unwrap();
    let plots = dir.join("plots");

    let redis = coupon_testkit::redis_settings().url;
    let soak = ["soak", "--seconds", "3", "--concurrency", "16", "--spike-customers", "300", "--spike-stock", "100"];
    let paths =
        ["--writer-metrics", &writer_metrics, "--redis", &redis, "--output", path(&page), "--plots", path(&plots)];
    let summary = loadgen(&world, &[&soak[..], &paths[..], &["--cross-check", "wrk: not run"]].concat());
    assert!(summary.contains("writer: 0 rebalances"), "{summary}");

    let md = read_unpadded(&page);
    for expected in [
        "# Spike benchmark\n\nthe spike tables\n",
        "## A sustained flood (`make soak`)",
        "| writer group rebalances | – | 0 |",
        "never oversold: held; lost: 0; rows without a 201: 0; twice: 0; sold out at write: 0",
        "Cross-check: wrk: not run.",
    ] {
        assert!(md.contains(expected), "the page lacks {expected:?}:\n{md}");
    }
    assert!(plots.join("soak.svg").metadata().unwrap().len() > 0, "soak.svg is empty");

    // A second soak replaces its section rather than adding one.
    loadgen(&world, &[&soak[..], &paths[..]].concat());
    let md = read_unpadded(&page);
    assert_eq!(md.matches("## A sustained flood").count(), 1, "{md}");
    assert!(!md.contains("Cross-check"), "{md}");
    api.terminate(Duration::from_secs(30)).await.expect("coupon-api stops on SIGTERM");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_many_coupons_tool_measures_idle_cost_and_spikes_and_writes_its_section() {
    let (few, many) = (World::new("many-coupons tool A").await, World::new("many-coupons tool B").await);
    let dir = log_dir().join(format!("many-tool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (api_few, api_many) = (few.start_api().await, many.start_api().await);
    let page = dir.join("BENCHMARK.md");
    std::fs::write(&page, "# Spike benchmark\n\nthe spike tables\n").unwrap();
    let json = dir.join("many.json");

    let redis = coupon_testkit::redis_settings().url;
    let (pid, pid_many, api_urls) = (api_few.pid().to_string(), api_many.pid().to_string(), many.api_urls());
    let management = many.management_urls();
    let b = [
        ["--api-many", &api_urls],
        ["--management-many", &management],
        ["--database-url-many", many.db.url()],
        ["--pid", &pid],
        ["--pid-many", &pid_many],
    ]
    .concat();
    let shape = ["--coupons", "40", "--idle-s", "1", "--settle-s", "1", "--spikes", "1"];
    let spike = ["--customers", "200", "--stock", "50", "--concurrency", "16"];
    let paths = ["--redis", &redis, "--output", path(&page), "--json", path(&json)];
    loadgen(&few, &[&["many"][..], &b[..], &shape[..], &spike[..], &paths[..]].concat());

    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(record["idle_after"]["open_coupons"], serde_json::json!([0, 40]), "{record}");
    assert_eq!(record["spikes_many"].as_array().unwrap().len(), 1, "{record}");
    let md = read_unpadded(&page);
    for expected in
        ["# Spike benchmark\n\nthe spike tables\n", "## Many coupons at once", "| after B got 40 | 0 / 40 |"]
    {
        assert!(md.contains(expected), "the page lacks {expected:?}:\n{md}");
    }
    api_few.terminate(Duration::from_secs(30)).await.expect("coupon-api stops on SIGTERM");
    api_many.terminate(Duration::from_secs(30)).await.expect("coupon-api stops on SIGTERM");
}
