//! coupon-writer settings (see coupon_infra::settings for how they are loaded).

use std::net::SocketAddr;

use coupon_infra::settings::{
    require_positive, DatabaseSettings, InvalidSetting, KafkaSettings, LogSettings, Validate,
};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub writer: WriterSettings,
    pub kafka: KafkaSettings,
    pub database: DatabaseSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WriterSettings {
    pub http: HttpSettings,
    pub group: String,
    /// A batch closes at this many records...
    pub batch_max_records: usize,
    /// ...or this long after its first record, whichever comes first.
    pub batch_max_wait_ms: u64,
}

impl Default for WriterSettings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            group: coupon_domain::WRITER_GROUP.into(),
            batch_max_records: 100,
            batch_max_wait_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    pub addr: SocketAddr,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self { addr: SocketAddr::from(([127, 0, 0, 1], 9091)) }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.kafka.validate()?;
        self.database.validate()?;
        require_positive("writer.batch_max_records", self.writer.batch_max_records as u64)?;
        require_positive("writer.batch_max_wait_ms", self.writer.batch_max_wait_ms)?;
        if self.writer.group.is_empty() {
            return Err(InvalidSetting::new("writer.group", "must not be empty"));
        }
        Ok(())
    }
}
