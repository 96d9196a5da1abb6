//! Start-up checks of Redis, PostgreSQL and Kafka. A misconfiguration (a
//! certificate that does not verify, a wrong password, a TLS-only server
//! reached in plaintext) stops the service within [`DEADLINE`], naming the
//! dependency and the reason, instead of being retried forever. A dependency
//! that is down (connection refused) is not a misconfiguration: the service
//! starts and rides it out as it does any outage. One that does not answer in
//! time may be slow to answer (a first TLS handshake on a busy host) rather
//! than down: it is asked again until the deadline, and only then taken for
//! an outage, so a wrong password behind a slow first answer still stops
//! the service.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use crate::redis::SharedRedis;
use crate::settings::{DatabaseSettings, KafkaSettings, RedisSettings};

/// How long an unexplained failure is retried before it stops the service
/// (inside the 30 s a misconfigured service is given to say so).
pub const DEADLINE: Duration = Duration::from_secs(20);
const RETRY: Duration = Duration::from_secs(1);
const KAFKA_ATTEMPT: Duration = Duration::from_secs(4);
const KAFKA_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
#[error("cannot use {dependency}: {reason}")]
pub struct Misconfigured {
    pub dependency: &'static str,
    pub reason: String,
}

/// One attempt's outcome, short of success.
enum Failure {
    /// Nothing answers: an outage, which the service rides out.
    Down(String),
    /// No answer in time: retried until the deadline, then taken for an outage.
    Slow(String),
    /// Retrying cannot help (authentication, certificates).
    Fatal(String),
    /// Anything else: retried until the deadline, then fatal.
    Unclear(String),
}

/// The dependencies one service uses.
#[derive(Default)]
pub struct Dependencies<'a> {
    pub redis: Option<&'a RedisSettings>,
    pub database: Option<&'a DatabaseSettings>,
    pub kafka: Option<&'a KafkaSettings>,
}

/// Checks each dependency (concurrently); the first misconfiguration found ends it.
pub async fn check(dependencies: Dependencies<'_>) -> Result<(), Misconfigured> {
    let redis = async {
        match dependencies.redis {
            Some(settings) => until_decided("Redis", || redis(settings)).await,
            None => Ok(()),
        }
    };
    let database = async {
        match dependencies.database {
            Some(settings) => until_decided("PostgreSQL", || database(settings)).await,
            None => Ok(()),
        }
    };
    let kafka = async {
        match dependencies.kafka {
            Some(settings) => until_decided("Kafka", || kafka(settings.clone())).await,
            None => Ok(()),
        }
    };
    tokio::try_join!(redis, database, kafka).map(|_| ())
}

/// Checks or exits: for a service's `main`.
pub async fn check_or_exit(service: &str, dependencies: Dependencies<'_>) {
    if let Err(err) = check(dependencies).await {
        tracing::error!(error = %err, "{service} cannot start");
        eprintln!("{service}: {err}");
        std::process::exit(3);
    }
}

async fn until_decided<F, Fut>(dependency: &'static str, attempt: F) -> Result<(), Misconfigured>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match attempt().await {
            Ok(()) => {
                tracing::info!(dependency, "reached");
                return Ok(());
            }
            Err(Failure::Down(reason)) => {
                tracing::warn!(dependency, %reason, "not reachable at start; starting anyway and retrying as in any outage");
                return Ok(());
            }
            Err(Failure::Fatal(reason)) => return Err(Misconfigured { dependency, reason }),
            Err(Failure::Slow(reason)) if tokio::time::Instant::now() + RETRY >= deadline => {
                tracing::warn!(dependency, %reason, "no answer at start; starting anyway and retrying as in any outage");
                return Ok(());
            }
            Err(Failure::Unclear(reason)) if tokio::time::Instant::now() + RETRY >= deadline => {
                return Err(Misconfigured { dependency, reason: format!("{reason} (for {}s)", DEADLINE.as_secs()) });
            }
            Err(Failure::Unclear(reason) | Failure::Slow(reason)) => {
                tracing::warn!(dependency, %reason, "cannot use it yet; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn redis(settings: &RedisSettings) -> Result<(), Failure> {
    let redis = SharedRedis::new(settings).map_err(|err| Failure::Fatal(format!("{err:#}")))?;
    match redis.query::<String>(&::redis::cmd("PING")).await {
        Ok(_) => Ok(()),
        Err(err) => Err(redis_failure(&err, settings.tls())),
    }
}

fn redis_failure(err: &::redis::RedisError, tls: bool) -> Failure {
    let reason = err.to_string();
    if matches!(err.kind(), ::redis::ErrorKind::AuthenticationFailed)
        || matches!(err.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
    {
        return Failure::Fatal(format!("authentication refused: {reason}"));
    }
    if err.is_connection_refusal() {
        return Failure::Down(reason);
    }
    if err.is_timeout() {
        return Failure::Slow(reason);
    }
    match (err.is_io_error(), err.is_connection_dropped(), tls) {
        // redis-rs keeps the I/O error behind its own, so the handshake's
        // failure (an unknown issuer, a name mismatch) is told by elimination.
        (true, false, true) => Failure::Fatal(format!("TLS: {reason}")),
        (_, true, false) => {
            Failure::Unclear(format!("{reason}; the server closed the connection: is it TLS-only (rediss://)?"))
        }
        _ => Failure::Unclear(reason),
    }
}

async fn database(settings: &DatabaseSettings) -> Result<(), Failure> {
    use crate::db::tls::ConnectError;
    let url = crate::db::connection_url(settings);
    let err = match crate::db::connect(&url).await {
        Ok(_) => return Ok(()),
        Err(err) => err,
    };
    let reason = err.to_string();
    Err(match &err {
        ConnectError::Url(_) | ConnectError::Certificates(_) => Failure::Fatal(reason),
        ConnectError::Postgres(pg) => match pg.code().map(|code| code.code()) {
            // Class 28: invalid authorization (a wrong password, no pg_hba entry).
            Some(code) if code.starts_with("28") || code == "3D000" => Failure::Fatal(reason),
            // Starting up, shutting down, out of connections: an outage.
            Some(code) if code.starts_with("57") || code.starts_with("53") => Failure::Down(reason),
            Some(_) => Failure::Unclear(reason),
            None => match io_cause(pg) {
                Some(io) if io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) => {
                    Failure::Fatal(format!("TLS: {reason}"))
                }
                Some(io) if io.kind() == std::io::ErrorKind::TimedOut => Failure::Slow(reason),
                Some(io) if is_down(io.kind()) => Failure::Down(reason),
                _ => Failure::Unclear(reason),
            },
        },
        ConnectError::Setup(_) => Failure::Unclear(reason),
    })
}

/// Records the client's errors and its last connection failure: librdkafka
/// reports authentication and TLS failures as errors, a broker that drops the
/// connection (a TLS listener reached in plaintext) only in its log, while
/// a metadata request just times out.
#[derive(Default, Clone)]
struct Recorder(Arc<Mutex<Recorded>>);

#[derive(Default)]
struct Recorded {
    error: Option<(RDKafkaErrorCode, String)>,
    failure: Option<String>,
}

impl Recorded {
    fn decided(&self) -> bool {
        matches!(self.error, Some((RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL, _)))
    }
}

impl ClientContext for Recorder {
    fn log(&self, _: RDKafkaLogLevel, facility: &str, message: &str) {
        if facility == "FAIL" {
            self.0.lock().expect("not poisoned").failure = Some(message.to_string());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let Some(code) = error.rdkafka_error_code() else { return };
        let mut recorded = self.0.lock().expect("not poisoned");
        // "All brokers down" sums up the failures it follows.
        if code != RDKafkaErrorCode::AllBrokersDown && !recorded.decided() {
            recorded.error = Some((code, reason.to_string()));
        }
    }
}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

async fn kafka(settings: KafkaSettings) -> Result<(), Failure> {
    tokio::task::spawn_blocking(move || {
        let recorder = Recorder::default();
        // A producer, whose `poll` hands the client's errors to the recorder;
        // it never sends a record.
        let client: BaseProducer<Recorder> = crate::kafka::client_config(&settings, "coupon-preflight")
            .create_with_context(recorder.clone())
            .map_err(|err| Failure::Fatal(err.to_string()))?;
        let deadline = std::time::Instant::now() + KAFKA_ATTEMPT;
        loop {
            if client.client().fetch_metadata(None, KAFKA_POLL).is_ok() {
                return Ok(());
            }
            client.poll(KAFKA_POLL);
            if recorder.0.lock().expect("not poisoned").decided() || std::time::Instant::now() >= deadline {
                break;
            }
        }
        let recorded = std::mem::take(&mut *recorder.0.lock().expect("not poisoned"));
        Err(kafka_failure(recorded, settings.security_protocol.tls()))
    })
    .await
    .unwrap_or_else(|err| Err(Failure::Unclear(err.to_string())))
}

fn kafka_failure(recorded: Recorded, tls: bool) -> Failure {
    let decided = recorded.decided();
    let reason = recorded.error.map(|(_, reason)| reason).or(recorded.failure).unwrap_or_default();
    if decided || reason.contains("security.protocol") {
        Failure::Fatal(reason)
    } else if reason.contains("Connection refused") {
        Failure::Down(reason)
    } else if reason.is_empty() || reason.contains("timed out") {
        Failure::Slow(if reason.is_empty() { "no broker answered".into() } else { reason })
    } else if !tls && reason.contains("APIVERSION_QUERY") {
        // The broker hung up on the first request: it expected a TLS handshake.
        Failure::Unclear(format!("{reason}; is the listener TLS (security protocol SSL or SASL_SSL)?"))
    } else {
        Failure::Unclear(reason)
    }
}

fn io_cause<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = cause.source();
    }
    None
}

fn is_down(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(kind, ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable)
}
