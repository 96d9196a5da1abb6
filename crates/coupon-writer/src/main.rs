use std::collections::BTreeSet;

use clap::{Parser, Subcommand};
use coupon_infra::{preflight, settings, shutdown, telemetry};
use coupon_writer::config::Settings;
use coupon_writer::dlq::{self, Selection};
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
    /// Inspect or replay the dead-letter topic.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Print every dead-lettered record with its reason.
    List,
    /// Republish dead-lettered records to the main topic; safe to repeat.
    Replay {
        /// Replay every record in the dead-letter topic.
        #[arg(long, conflicts_with = "offset", required_unless_present = "offset")]
        all: bool,
        /// Offset of a record to replay; repeat for several.
        #[arg(long)]
        offset: Vec<i64>,
        /// The dead-letter partition the offsets refer to.
        #[arg(long, default_value_t = 0)]
        partition: i32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The FAILPOINTS variable's fail points, for the tests that make an
    // essential task end; present only in builds with the `failpoints` feature.
    #[cfg(feature = "failpoints")]
    let _fail_points = fail::FailScenario::setup();
    let settings: Settings = settings::load_or_exit("coupon-writer");
    telemetry::init(settings.log.format);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let dependencies = preflight::Dependencies {
                database: Some(&settings.database),
                kafka: Some(&settings.kafka),
                ..Default::default()
            };
            preflight::check_or_exit("coupon-writer", dependencies).await;
            Application::build(settings).await?.run_until(shutdown::signal_received()).await
        }
        Command::Migrate => {
            let applied = coupon_infra::db::migrate(settings.database.url.expose_secret()).await?;
            tracing::info!(?applied, "migrations applied");
            Ok(())
        }
        Command::Dlq { command: DlqCommand::List } => {
            let kafka = settings.kafka.clone();
            let entries = tokio::task::spawn_blocking(move || dlq::read_all(&kafka)).await??;
            for entry in &entries {
                println!("{entry}");
            }
            println!("{} record(s) in {}", entries.len(), settings.kafka.dlq_topic);
            Ok(())
        }
        Command::Dlq { command: DlqCommand::Replay { all, offset, partition } } => {
            let selection = if all {
                Selection::All
            } else {
                Selection::Offsets { partition, offsets: BTreeSet::from_iter(offset) }
            };
            let replayed = dlq::replay(&settings.kafka, &selection).await?;
            println!("replayed {replayed} record(s) to {}", settings.kafka.topic);
            Ok(())
        }
    }
}
