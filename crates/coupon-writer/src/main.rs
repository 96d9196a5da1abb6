use clap::{Parser, Subcommand};
use coupon_infra::{settings, shutdown, telemetry};
use coupon_writer::config::Settings;
use coupon_writer::startup::Application;
use secrecy::ExposeSecret;

#[derive(Parser)]
#[command(name = "coupon-writer", about = "Applies coupon events from Kafka to PostgreSQL")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume and apply events until SIGTERM/SIGINT (the default).
    Run,
    /// Apply pending database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings = settings::load_or_exit("coupon-writer");
    telemetry::init(settings.log.format);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => Application::build(settings).await?.run_until(shutdown::signal_received()).await,
        Command::Migrate => {
            let applied = coupon_infra::db::migrate(settings.database.url.expose_secret()).await?;
            tracing::info!(?applied, "migrations applied");
            Ok(())
        }
    }
}
