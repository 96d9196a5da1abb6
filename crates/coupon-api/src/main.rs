use coupon_api::config::Settings;
use coupon_api::startup::Application;
use coupon_infra::{preflight, settings, shutdown, telemetry};

// Every request allocates and frees small buffers on two worker threads; glibc's
// allocator showed up in the spike profile (malloc, free, consolidation).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The FAILPOINTS variable's fail points, for the tests that make an
    // essential task end; present only in builds with the `failpoints` feature.
    #[cfg(feature = "failpoints")]
    let _fail_points = fail::FailScenario::setup();
    let settings: Settings = settings::load_or_exit("coupon-api");
    telemetry::init(settings.log.format);
    let dependencies = preflight::Dependencies {
        redis: Some(&settings.redis),
        database: Some(&settings.database),
        kafka: Some(&settings.kafka.client),
    };
    preflight::check_or_exit("coupon-api", dependencies).await;
    let app = Application::build(settings).await?;
    app.run_until(shutdown::signal_received()).await
}
