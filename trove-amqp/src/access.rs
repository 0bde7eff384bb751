//! Broker credentials of their own for each guest (beyond upstream, where every guest shares the control plane's).
//!
//! [`GuestAccess::grant`] creates a RabbitMQ user for one instance whose permissions allow only:
//! - reading its own topic (`guestagent.<instance_id>`) and its direct reply-to address,
//! - publishing to the topic exchange with the conductor's routing key only (topic permissions), and replying to
//!   calls through the default exchange,
//! - declaring nothing (the guest's bus runs with [`AmqpConfig::declare_topology`] = `false`).
//!
//! So a guest cannot consume another guest's queue. [`GuestAccess::revoke`] deletes the user when the instance is
//! deleted. Users are managed with `rabbitmqctl` on the broker's machine; the password goes through standard input,
//! never the command line.

use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use trove_core::error::{Error, Result};
use trove_core::model::Secret;
use uuid::Uuid;

use crate::AmqpConfig;

/// How to run `rabbitmqctl` for the broker.
#[derive(Debug, Clone)]
pub struct RabbitCtl {
    program: PathBuf,
    env: Vec<(String, String)>,
}

impl Default for RabbitCtl {
    fn default() -> Self {
        RabbitCtl {
            program: PathBuf::from("rabbitmqctl"),
            env: Vec::new(),
        }
    }
}

impl RabbitCtl {
    /// `rabbitmqctl` from `PATH`, for the local default node.
    pub fn new() -> RabbitCtl {
        RabbitCtl::default()
    }
    /// Uses another program path.
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> RabbitCtl {
        self.program = program.into();
        self
    }
    /// Sets an environment variable for every run (`RABBITMQ_NODENAME`, `HOME`, `ERL_EPMD_PORT`...).
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> RabbitCtl {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs one command; `stdin` is written to its standard input. Output is returned on success.
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            Error::backend(
                "amqp-admin",
                format!("cannot run {}: {e}", self.program.display()),
                false,
            )
        })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).await.map_err(|e| {
                Error::backend("amqp-admin", format!("writing to rabbitmqctl: {e}"), true)
            })?;
            drop(pipe);
        }
        let out = child.wait_with_output().await.map_err(|e| {
            Error::backend("amqp-admin", format!("waiting for rabbitmqctl: {e}"), true)
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            // args never contain secrets (passwords go through stdin).
            Err(Error::backend(
                "amqp-admin",
                format!(
                    "rabbitmqctl {} failed ({}): {}{}",
                    args.first().copied().unwrap_or(""),
                    out.status,
                    stdout.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                false,
            ))
        }
    }
}

/// Escapes a literal for a RabbitMQ permission regex.
fn regex_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Creates and removes per-guest broker users.
#[derive(Debug, Clone)]
pub struct GuestAccess {
    ctl: RabbitCtl,
    control_plane: AmqpConfig,
    conductor_topic: String,
}

impl GuestAccess {
    /// Guests of the control plane configured by `control_plane` (its exchange, prefix and vhost), reporting to
    /// the `trove-conductor` topic.
    pub fn new(ctl: RabbitCtl, control_plane: AmqpConfig) -> GuestAccess {
        GuestAccess {
            ctl,
            control_plane,
            conductor_topic: "trove-conductor".into(),
        }
    }

    /// Uses another conductor topic.
    pub fn with_conductor_topic(mut self, topic: impl Into<String>) -> GuestAccess {
        self.conductor_topic = topic.into();
        self
    }

    /// The broker user name of an instance's guest.
    pub fn username(instance_id: Uuid) -> String {
        format!("trove-guest-{instance_id}")
    }

    /// Creates (or re-keys) the guest's user with its narrow permissions and returns the configuration its bus
    /// should use. Idempotent.
    pub async fn grant(&self, instance_id: Uuid, password: &Secret) -> Result<AmqpConfig> {
        let user = Self::username(instance_id);
        let cp = &self.control_plane;
        let pw = format!("{}\n", password.expose());
        if let Err(e) = self.ctl.run(&["add_user", &user], Some(&pw)).await {
            if !e.to_string().contains("already exists") {
                return Err(e);
            }
            self.ctl.run(&["change_password", &user], Some(&pw)).await?;
        }
        let own_queue = regex_literal(&format!("{}guestagent.{instance_id}", cp.queue_prefix));
        let conductor = regex_literal(&format!("{}{}", cp.queue_prefix, self.conductor_topic));
        let configure = "^$".to_string();
        let write = format!("^({}|amq\\.default)$", regex_literal(&cp.exchange));
        let read = format!("^({own_queue}|amq\\.rabbitmq\\.reply-to.*)$");
        self.ctl
            .run(
                &[
                    "set_permissions",
                    "-p",
                    &cp.vhost,
                    &user,
                    &configure,
                    &write,
                    &read,
                ],
                None,
            )
            .await?;
        let topic_write = format!("^{conductor}$");
        self.ctl
            .run(
                &[
                    "set_topic_permissions",
                    "-p",
                    &cp.vhost,
                    &user,
                    &cp.exchange,
                    &topic_write,
                    "^$",
                ],
                None,
            )
            .await?;
        Ok(AmqpConfig {
            username: user,
            password: password.clone(),
            declare_topology: false,
            ..cp.clone()
        })
    }

    /// Deletes the guest's user (missing users are fine).
    pub async fn revoke(&self, instance_id: Uuid) -> Result<()> {
        let user = Self::username(instance_id);
        match self.ctl.run(&["delete_user", &user], None).await {
            Ok(_) => Ok(()),
            Err(e)
                if e.to_string().contains("does not exist")
                    || e.to_string().contains("no_such_user") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_literals_are_escaped() {
        assert_eq!(regex_literal("t1.guestagent.a-b"), "t1\\.guestagent\\.a-b");
        assert_eq!(regex_literal("x*(y)"), "x\\*\\(y\\)");
    }
}
