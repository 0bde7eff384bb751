//! Clients of the engines a test provisioned, connecting as an application would (the instance's address and
//! port as its view shows them, a user): SQL over the MySQL protocol (MariaDB) or PostgreSQL's, and Redis.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sqlx::{ConnectOptions, Connection, Executor, Row};
use uuid::Uuid;

/// The user the engine tests create with their instances.
pub const APP_USER: &str = "app";
/// Its password.
pub const APP_PASSWORD: &str = "app-Pw-1x";
/// Its database.
pub const APP_DB: &str = "shop";

/// Where an instance's engine answers: the first address of its view (`ip`) and its port (the engine's standard
/// port when the view shows none).
pub fn endpoint(i: &trove::core::model::Instance) -> SocketAddr {
    let ip = i
        .addresses
        .first()
        .unwrap_or_else(|| panic!("instance {} shows no address", i.id))
        .address
        .parse()
        .expect("the instance's address is an IP address");
    let port = i
        .port
        .unwrap_or_else(|| panic!("instance {} shows no port", i.id));
    SocketAddr::new(ip, port)
}

/// Where an instance's engine answers, from its HTTP view: `ip[0]` and `port`.
pub fn http_endpoint(inst: &serde_json::Value) -> SocketAddr {
    let ip = inst["ip"][0]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no IP address in {inst}"));
    let port = inst["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("no port in {inst}"));
    SocketAddr::new(ip, port)
}

/// Asserts that `at` is an address of the instance's own (loopback, not 127.0.0.1, where the host's own servers
/// listen) with the engine's standard port, as the local compute's address pool hands out.
pub fn assert_own_address(engine: Engine, at: SocketAddr) {
    assert!(
        at.ip().is_loopback() && at.ip() != std::net::Ipv4Addr::LOCALHOST,
        "{engine:?}: {at} is not an address of the instance's own"
    );
    assert_eq!(at.port(), engine.standard_port(), "{engine:?}: {at}");
}

/// Which client an engine speaks (MariaDB serves the `mysql` and `mariadb` datastores).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Engine {
    /// The MySQL protocol.
    Mysql,
    /// PostgreSQL.
    Postgres,
    /// Redis.
    Redis,
}

impl Engine {
    /// The engine of a datastore.
    pub fn of(datastore: &str) -> Engine {
        match datastore {
            "mysql" | "mariadb" => Engine::Mysql,
            "postgresql" => Engine::Postgres,
            "redis" => Engine::Redis,
            other => panic!("unknown datastore {other}"),
        }
    }

    /// The engine's standard port.
    pub fn standard_port(self) -> u16 {
        match self {
            Engine::Mysql => 3306,
            Engine::Postgres => 5432,
            Engine::Redis => 6379,
        }
    }
}

/// An open SQL connection.
pub enum SqlConn {
    /// To MariaDB.
    Mysql(sqlx::MySqlConnection),
    /// To PostgreSQL.
    Postgres(sqlx::PgConnection),
}

impl SqlConn {
    /// Connects as `user` to database `db` on `at`; `Err` carries the engine's refusal.
    pub async fn connect(
        engine: Engine,
        at: SocketAddr,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<SqlConn, String> {
        match engine {
            Engine::Mysql => sqlx::mysql::MySqlConnectOptions::new()
                .host(&at.ip().to_string())
                .port(at.port())
                .username(user)
                .password(password)
                .database(db)
                .connect()
                .await
                .map(SqlConn::Mysql),
            Engine::Postgres => sqlx::postgres::PgConnectOptions::new()
                .host(&at.ip().to_string())
                .port(at.port())
                .username(user)
                .password(password)
                .database(db)
                .connect()
                .await
                .map(SqlConn::Postgres),
            Engine::Redis => panic!("Redis speaks no SQL"),
        }
        .map_err(|e| e.to_string())
    }

    /// Connects as [`APP_USER`] to [`APP_DB`]; panics when refused.
    pub async fn app(engine: Engine, at: SocketAddr) -> SqlConn {
        SqlConn::connect(engine, at, APP_USER, APP_PASSWORD, APP_DB)
            .await
            .unwrap_or_else(|e| panic!("{APP_USER} connects to {APP_DB} ({engine:?}): {e}"))
    }

    /// Runs `statement`.
    pub async fn execute(&mut self, statement: &str) -> Result<(), String> {
        match self {
            SqlConn::Mysql(c) => c.execute(statement).await.map(drop),
            SqlConn::Postgres(c) => c.execute(statement).await.map(drop),
        }
        .map_err(|e| format!("{statement}: {e}"))
    }

    /// The first column of the first row of `query` as an integer (`None`: no row; a NULL reads 0, as the
    /// SUM of no rows).
    pub async fn fetch_i64(&mut self, query: &str) -> Result<Option<i64>, String> {
        let v = match self {
            SqlConn::Mysql(c) => c
                .fetch_optional(query)
                .await
                .and_then(|r| r.map(|r| r.try_get::<Option<i64>, _>(0)).transpose()),
            SqlConn::Postgres(c) => c
                .fetch_optional(query)
                .await
                .and_then(|r| r.map(|r| r.try_get::<Option<i64>, _>(0)).transpose()),
        };
        v.map(|v| v.map(Option::unwrap_or_default))
            .map_err(|e| format!("{query}: {e}"))
    }

    /// The first column of the one row of `query` as text.
    pub async fn fetch_text(&mut self, query: &str) -> Result<String, String> {
        match self {
            SqlConn::Mysql(c) => c.fetch_one(query).await.and_then(|r| r.try_get(0)),
            SqlConn::Postgres(c) => c.fetch_one(query).await.and_then(|r| r.try_get(0)),
        }
        .map_err(|e| format!("{query}: {e}"))
    }

    /// Closes the connection.
    pub async fn close(self) {
        let closed = match self {
            SqlConn::Mysql(c) => c.close().await,
            SqlConn::Postgres(c) => c.close().await,
        };
        closed.expect("close");
    }
}

/// Runs `statements` as [`APP_USER`] on [`APP_DB`], one connection; panics on any failure.
pub async fn app_execute(engine: Engine, at: SocketAddr, statements: &[&str]) {
    let mut c = SqlConn::app(engine, at).await;
    for s in statements {
        c.execute(s).await.unwrap_or_else(|e| panic!("{e}"));
    }
    c.close().await;
}

/// The integer `query` answers [`APP_USER`] on [`APP_DB`] (`None`: no row); panics on any failure.
pub async fn app_i64(engine: Engine, at: SocketAddr, query: &str) -> Option<i64> {
    let mut c = SqlConn::app(engine, at).await;
    let v = c.fetch_i64(query).await.unwrap_or_else(|e| panic!("{e}"));
    c.close().await;
    v
}

/// Whether `user`/`pw` logs in on `at`: SQL engines connect to database `db` (and close), Redis answers PING.
pub async fn logs_in(
    engine: Engine,
    at: SocketAddr,
    user: &str,
    pw: &str,
    db: &str,
) -> Result<(), String> {
    match engine {
        Engine::Redis => {
            let mut c = redis_connect(at, user, pw)
                .await
                .map_err(|e| e.to_string())?;
            let pong: String = redis::cmd("PING")
                .query_async(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            (pong == "PONG").then_some(()).ok_or(pong)
        }
        _ => {
            SqlConn::connect(engine, at, user, pw, db)
                .await?
                .close()
                .await;
            Ok(())
        }
    }
}

/// Connects to Redis on `at` as `user` (at most 10 s).
pub async fn redis_connect(
    at: SocketAddr,
    user: &str,
    password: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let info = redis::ConnectionInfo {
        addr: redis::ConnectionAddr::Tcp(at.ip().to_string(), at.port()),
        redis: redis::RedisConnectionInfo {
            db: 0,
            username: Some(user.into()),
            password: Some(password.into()),
            protocol: redis::ProtocolVersion::RESP2,
        },
    };
    let client = redis::Client::open(info)?;
    tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .unwrap_or_else(|_| {
        Err(redis::RedisError::from((
            redis::ErrorKind::IoError,
            "connect timed out",
        )))
    })
}

/// The secret of the guest's own admin account (`os_admin`) of instance `id`, from its server directory under
/// the state directory `state` (on the default host or host `remote`).
pub fn guest_admin_secret(state: &Path, id: Uuid) -> String {
    [state.join("servers"), state.join("hosts").join("remote")]
        .iter()
        .map(|h| h.join(id.to_string()).join("guest").join("os_admin.secret"))
        .find_map(|p| std::fs::read_to_string(p).ok())
        .expect("the guest's admin secret")
        .trim()
        .to_string()
}

/// A Redis setting as the engine runs it (`CONFIG GET`, as the guest's admin account), as an integer.
pub async fn redis_setting(at: SocketAddr, state: &Path, id: Uuid, name: &str) -> i64 {
    let mut c = redis_connect(at, "os_admin", &guest_admin_secret(state, id))
        .await
        .expect("os_admin connects to Redis");
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(&mut c)
        .await
        .unwrap_or_else(|e| panic!("CONFIG GET {name}: {e}"));
    v.get(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("CONFIG GET {name}: {v:?}"))
}

/// Prints how long a step of an engine test took, and starts timing the next.
pub fn step(t: &mut std::time::Instant, what: &str, ds: &str) {
    eprintln!("[{ds}] {what}: {:.2?}", t.elapsed());
    *t = std::time::Instant::now();
}
