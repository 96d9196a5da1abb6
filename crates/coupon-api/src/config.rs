//! coupon-api settings (see coupon_infra::settings for how they are loaded).

use std::net::SocketAddr;

use coupon_infra::settings::{
    DatabaseSettings, InvalidSetting, KafkaSettings, LogSettings, RedisSettings, Validate,
};
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub http: HttpSettings,
    pub admin: AdminSettings,
    pub redis: RedisSettings,
    pub kafka: KafkaSettings,
    pub database: DatabaseSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 0,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AdminSettings {
    /// Bearer token for the admin endpoints; without one they answer 401.
    pub token: Option<SecretString>,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.redis.validate()?;
        self.kafka.validate()?;
        self.database.validate()
    }
}
