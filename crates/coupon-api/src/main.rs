use coupon_api::config::Settings;
use coupon_api::startup::Application;
use coupon_infra::{settings, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = settings::load_or_exit("coupon-api");
    telemetry::init(settings.log.format);
    let app = Application::build(settings).await?;
    app.run_until(shutdown::signal_received()).await
}
