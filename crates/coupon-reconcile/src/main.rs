use std::process::ExitCode;

use clap::Parser;
use coupon_infra::{preflight, settings, telemetry};
use coupon_reconcile::{run, Args, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let settings: Settings = settings::load_or_exit("coupon-reconcile");
    telemetry::init(settings.log.format);
    let dependencies = preflight::Dependencies {
        redis: Some(&settings.redis),
        database: Some(&settings.database),
        kafka: Some(&settings.kafka),
    };
    preflight::check_or_exit("coupon-reconcile", dependencies).await;
    match run(&settings, &args).await {
        Ok(report) => {
            println!("{}", report.table());
            if let Some(gateway) = &args.pushgateway {
                if let Err(err) = coupon_reconcile::push(gateway, args.namespace.as_deref(), &report).await {
                    eprintln!("coupon-reconcile: {err:#}");
                    return ExitCode::from(2);
                }
            }
            if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            eprintln!("coupon-reconcile: {err:#}");
            ExitCode::from(2)
        }
    }
}
