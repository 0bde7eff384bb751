use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use uuid::Uuid;

use crate::error::{Error, Result};

/// A configuration group: parameter values for instances of one datastore version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Configuration {
    /// Id.
    pub id: Uuid,
    /// Owning tenant.
    pub tenant_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Datastore version the values apply to.
    pub datastore_version_id: Uuid,
    /// Parameter values, keyed by lower-cased parameter name.
    pub values: Map<String, Value>,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Last update.
    pub updated: DateTime<Utc>,
    /// Whether it was deleted.
    pub deleted: bool,
}

/// Type of a configuration parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// JSON integer.
    Integer,
    /// JSON string.
    String,
    /// JSON boolean.
    Boolean,
    /// JSON number.
    Float,
    /// List (Cassandra); given as a string.
    List,
}

impl ParamType {
    /// Upstream spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Integer => "integer",
            ParamType::String => "string",
            ParamType::Boolean => "boolean",
            ParamType::Float => "float",
            ParamType::List => "list",
        }
    }
}

/// A validation rule for one configuration parameter of a datastore version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigParam {
    /// Version the rule belongs to.
    pub datastore_version_id: Uuid,
    /// Parameter name.
    pub name: String,
    /// Whether changing it needs an engine restart.
    pub restart_required: bool,
    /// Value type.
    #[serde(rename = "type")]
    pub data_type: ParamType,
    /// Lower bound, for numbers.
    pub min: Option<Number>,
    /// Upper bound, for numbers.
    pub max: Option<Number>,
}

impl ConfigParam {
    /// Checks one value against the rule (upstream `_validate_configuration`; failures are 422).
    pub fn check(&self, value: &Value) -> Result<()> {
        let type_ok = match self.data_type {
            ParamType::Integer => value.is_i64() || value.is_u64(),
            ParamType::Float => value.is_number(),
            ParamType::Boolean => value.is_boolean(),
            ParamType::String | ParamType::List => value.is_string(),
        };
        if !type_ok {
            return Err(Error::unprocessable(format!(
                "The value provided for the configuration parameter {} is not of type {}.",
                self.name,
                self.data_type.as_str()
            )));
        }
        if let Some(v) = value.as_f64() {
            if let Some(min) = self.min.as_ref().and_then(Number::as_f64) {
                if v < min {
                    return Err(Error::unprocessable(format!(
                        "The value for the configuration parameter {} is less than the minimum allowed: {min}",
                        self.name
                    )));
                }
            }
            if let Some(max) = self.max.as_ref().and_then(Number::as_f64) {
                if v > max {
                    return Err(Error::unprocessable(format!(
                        "The value for the configuration parameter {} is greater than the maximum allowed: {max}",
                        self.name
                    )));
                }
            }
        }
        Ok(())
    }
}
