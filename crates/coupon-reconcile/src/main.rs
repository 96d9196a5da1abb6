use std::process::ExitCode;

use clap::Parser;
use coupon_infra::{settings, telemetry};
use coupon_reconcile::{run, Args, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let settings: Settings = settings::load_or_exit("coupon-reconcile");
    telemetry::init(settings.log.format);
    match run(&settings, &args).await {
        Ok(report) => {
            println!("{}", report.table());
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
