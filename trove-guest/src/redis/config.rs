//! Redis's configuration: `redis.conf` rendered from the recorded state, and changed parameters applied live
//! with `CONFIG SET` (see [`crate::overrides`]).

use async_trait::async_trait;

use trove_core::model::Manager;
use trove_core::{Error, Result};

use super::Redis;
use crate::common::{override_value, share_mb, write_engine_file};
use crate::engine::Engine;
use crate::overrides::{read_rendered, rendered_value, rules_need_restart, Configurable};

/// Redis defaults (compiled into the server) of parameters the rendered base config does not set. `maxclients`
/// is not here: the server lowers its default to what its file limit allows at start.
const REDIS_DEFAULTS: &[(&str, &str)] = &[
    ("timeout", "0"),
    ("slowlog-log-slower-than", "10000"),
    ("slowlog-max-len", "128"),
    ("appendfsync", "everysec"),
];

#[async_trait]
impl Configurable for Redis {
    fn render_config(&self) -> Result<()> {
        let st = self.base.layout.state()?;
        let l = &self.base.layout;
        let bind = if self.base.ctx.bind_address.is_empty() {
            "127.0.0.1"
        } else {
            &self.base.ctx.bind_address
        };
        let mut conf = format!(
            "# Rendered by trove-guest for {mem} MB of RAM; do not edit (apply a configuration group instead).\n\
             bind {bind}\n\
             port {port}\n\
             protected-mode no\n\
             daemonize no\n\
             dir \"{data}\"\n\
             pidfile \"{pid}\"\n\
             logfile \"{log}\"\n\
             aclfile \"{acl}\"\n\
             appendonly yes\n\
             save \"\"\n\
             # 50 % of the flavor RAM\n\
             maxmemory {maxmem}mb\n\
             maxmemory-policy noeviction\n\
             # a replica's first copy starts at once (the default waits 5 s for more replicas to share it)\n\
             repl-diskless-sync-delay 0\n",
            mem = st.memory_mb,
            port = self.base.ctx.port,
            data = l.data_dir.display(),
            pid = self.pid_file().display(),
            log = self.log_file().display(),
            acl = self.acl_path().display(),
            maxmem = share_mb(st.memory_mb, 0.5, 16),
        );
        if !st.overrides.is_empty() {
            conf.push_str("# configuration overrides\n");
            for (k, v) in &st.overrides {
                conf.push_str(&format!("{k} \"{}\"\n", override_value(k, v)?));
            }
        }
        conf.push_str(&self.replica_conf()?);
        conf.push_str(&self.cluster_conf()?);
        conf.push_str(&self.tls_conf()?);
        write_engine_file(&self.conf_path(), &conf, self.base.run_as)
    }

    async fn apply_changes(&self, changed: Vec<String>) -> Result<Vec<String>> {
        let conf = read_rendered(&self.conf_path(), "redis")?;
        // An engine that does not answer starts with the rendered file.
        match self.connect_admin().await {
            Ok(mut c) => config_set_changed(&mut c, &conf, &changed).await,
            Err(_) => Ok(changed),
        }
    }
}

/// `CONFIG SET` of each changed parameter; `conf` is the config text rendered with the new overrides.
async fn config_set_changed(
    conn: &mut redis::aio::MultiplexedConnection,
    conf: &str,
    changed: &[String],
) -> Result<Vec<String>> {
    let mut restart = Vec::new();
    for key in changed {
        if rules_need_restart(Manager::Redis, key) {
            restart.push(key.clone());
            continue;
        }
        let value = rendered_value(conf, key).or_else(|| {
            REDIS_DEFAULTS
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.to_string())
        });
        let Some(value) = value else {
            restart.push(key.clone());
            continue;
        };
        let r: redis::RedisResult<redis::Value> = redis::cmd("CONFIG")
            .arg("SET")
            .arg(key)
            .arg(&value)
            .query_async(conn)
            .await;
        match r {
            Ok(_) => tracing::info!(parameter = %key, "configuration parameter applied live"),
            Err(e) => {
                let text = e.to_string();
                if text.contains("immutable")
                    || text.contains("Unsupported CONFIG parameter")
                    || text.contains("Unknown option")
                {
                    restart.push(key.clone());
                } else {
                    return Err(Error::backend(
                        "redis",
                        format!("the configuration parameter '{key}' could not be applied: {text}"),
                        false,
                    ));
                }
            }
        }
    }
    Ok(restart)
}
