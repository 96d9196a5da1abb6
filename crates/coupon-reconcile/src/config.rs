//! Settings: the same `COUPON__…` variables as the services.

use coupon_infra::settings::{DatabaseSettings, InvalidSetting, KafkaSettings, LogSettings, RedisSettings, Validate};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub redis: RedisSettings,
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
    pub log: LogSettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.redis.validate()?;
        self.database.validate()?;
        self.kafka.validate()
    }
}
