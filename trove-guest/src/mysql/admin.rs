//! Users, databases and root of the MySQL family: the [`UsersFacet`], [`DatabasesFacet`] and [`RootFacet`]
//! of [`Mysql`], in SQL over the admin connection.

use async_trait::async_trait;
use sqlx::mysql::MySqlConnection;
use sqlx::{Connection, Row};

use trove_core::model::{
    validate_database_name, validate_host, validate_password, validate_user_name, DatabaseSpec,
    Secret, UserSpec, UserUpdate,
};
use trove_core::ports::{DatabasesFacet, RootFacet, UserInfo, UsersFacet};
use trove_core::{Error, Result};

use super::{exec_sql, Mysql};

/// Users the guest keeps out of listings.
const SYSTEM_USERS: &[&str] = &[
    "os_admin",
    "os_sst",
    "root",
    "mariadb.sys",
    "mysql",
    "PUBLIC",
    "",
];
/// Schemas the guest keeps out of listings.
const SYSTEM_DBS: &[&str] = &[
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
    "lost+found",
];

/// Quotes an identifier with backticks.
pub(crate) fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a string literal (backslashes and quotes escaped).
pub(crate) fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `IDENTIFIED BY PASSWORD '<hash>'`: the account's `mysql_native_password` hash (`*` and the upper-case hex of
/// SHA-1 of SHA-1 of the password), so the statement carries no password in clear: not into the binary log
/// (point-in-time restore, replicas), not into any statement log.
pub(crate) fn identified_by(password: &str) -> String {
    use sha1::{Digest, Sha1};
    let inner = Sha1::digest(password.as_bytes());
    let outer = Sha1::digest(inner);
    format!("IDENTIFIED BY PASSWORD '*{}'", hex::encode_upper(outer))
}

/// A database name in a GRANT: backticked, with the LIKE wildcards `_` and `%` escaped so only that database matches.
fn grant_db(name: &str) -> String {
    ident(&grant_db_name(name))
}

/// The database name as stored in `mysql.db` after a GRANT on [`grant_db`].
fn grant_db_name(name: &str) -> String {
    name.replace('\\', "\\\\")
        .replace('_', "\\_")
        .replace('%', "\\%")
}

fn unescape_grant_db(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn account(name: &str, host: &str) -> String {
    format!("{}@{}", lit(name), lit(host))
}

impl Mysql {
    /// Validates an account and gives its host (`%` when empty).
    fn check_account<'a>(&self, name: &str, host: &'a str) -> Result<&'a str> {
        validate_user_name(self.base.manager, name)?;
        self.base.check_reserved(name)?;
        let host = Self::user_host(Some(host));
        validate_host(host)?;
        Ok(host)
    }

    async fn has_db(&self, c: &mut MySqlConnection, name: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?")
            .bind(name)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.is_some())
    }

    async fn has_user(&self, c: &mut MySqlConnection, name: &str, host: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM mysql.user WHERE User = ? AND Host = ?")
            .bind(name)
            .bind(host)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.is_some())
    }

    async fn require_user(&self, c: &mut MySqlConnection, name: &str, host: &str) -> Result<()> {
        if self.has_user(c, name, host).await? {
            Ok(())
        } else {
            Err(Error::not_found("User", format!("{name}@{host}")))
        }
    }

    /// Creates databases; `strict` refuses existing ones (the API), otherwise they are left as they are (prepare).
    pub(super) async fn create_dbs(&self, dbs: &[DatabaseSpec], strict: bool) -> Result<()> {
        self.base.validate_databases(dbs)?;
        if dbs.is_empty() {
            return Ok(());
        }
        let mut c = self.connect_admin().await?;
        let mut todo = Vec::new();
        for db in dbs {
            if !self.has_db(&mut c, &db.name).await? {
                todo.push(db);
            } else if strict {
                return Err(Error::bad_request(format!(
                    "A database named '{}' already exists.",
                    db.name
                )));
            }
        }
        for db in todo {
            let mut s = format!("CREATE DATABASE IF NOT EXISTS {}", ident(&db.name));
            if let Some(cs) = &db.character_set {
                s.push_str(&format!(" CHARACTER SET {cs}"));
            }
            if let Some(co) = &db.collate {
                s.push_str(&format!(" COLLATE {co}"));
            }
            exec_sql(&mut c, &s).await.map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        Ok(())
    }

    /// Creates users with their grants; `strict` refuses existing ones (the API), otherwise their password and
    /// grants are set again (prepare).
    pub(super) async fn create_accounts(&self, users: &[UserSpec], strict: bool) -> Result<()> {
        self.base.validate_users(users)?;
        if users.is_empty() {
            return Ok(());
        }
        let mut c = self.connect_admin().await?;
        for u in users {
            let host = Self::user_host(u.host.as_deref());
            if strict && self.has_user(&mut c, &u.name, host).await? {
                return Err(Error::bad_request(format!(
                    "A user named '{}'@'{host}' already exists.",
                    u.name
                )));
            }
            for d in &u.databases {
                if !self.has_db(&mut c, d).await? {
                    return Err(Error::not_found("Database", d));
                }
            }
        }
        for u in users {
            let acct = account(&u.name, Self::user_host(u.host.as_deref()));
            let pw = identified_by(u.password.expose());
            let mut stmts = vec![
                format!("CREATE USER IF NOT EXISTS {acct} {pw}"),
                format!("ALTER USER {acct} {pw}"),
            ];
            for d in &u.databases {
                stmts.push(format!(
                    "GRANT ALL PRIVILEGES ON {}.* TO {acct}",
                    grant_db(d)
                ));
            }
            for st in &stmts {
                exec_sql(&mut c, st).await.map_err(|e| self.err(e))?;
            }
        }
        let _ = c.close().await;
        Ok(())
    }

    fn user_host(host: Option<&str>) -> &str {
        host.filter(|h| !h.is_empty()).unwrap_or("%")
    }
}

#[async_trait]
impl UsersFacet for Mysql {
    async fn create_users(&self, users: &[UserSpec]) -> Result<()> {
        self.create_accounts(users, true).await
    }

    async fn list_users(&self) -> Result<Vec<UserInfo>> {
        let mut c = self.connect_admin().await?;
        let rows = sqlx::query(
            "SELECT CAST(User AS CHAR), CAST(Host AS CHAR) FROM mysql.user WHERE is_role = 'N' ORDER BY User, Host",
        )
        .fetch_all(&mut c)
        .await
        .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let name: String = r.try_get(0).map_err(|e| self.err(e))?;
            let host: String = r.try_get(1).map_err(|e| self.err(e))?;
            if SYSTEM_USERS.contains(&name.as_str()) {
                continue;
            }
            let dbs = sqlx::query(
                "SELECT CAST(Db AS CHAR) FROM mysql.db WHERE User = ? AND Host = ? ORDER BY Db",
            )
            .bind(&name)
            .bind(&host)
            .fetch_all(&mut c)
            .await
            .map_err(|e| self.err(e))?;
            let mut databases = Vec::new();
            for d in dbs {
                let db: String = d.try_get(0).map_err(|e| self.err(e))?;
                databases.push(unescape_grant_db(&db));
            }
            out.push(UserInfo {
                name,
                host,
                databases,
            });
        }
        let _ = c.close().await;
        Ok(out)
    }

    async fn delete_user(&self, name: &str, host: &str) -> Result<()> {
        let host = self.check_account(name, host)?;
        let mut c = self.connect_admin().await?;
        self.require_user(&mut c, name, host).await?;
        exec_sql(&mut c, &format!("DROP USER {}", account(name, host)))
            .await
            .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        Ok(())
    }

    async fn update_user(&self, name: &str, host: &str, update: &UserUpdate) -> Result<()> {
        let host = self.check_account(name, host)?;
        if let Some(n) = &update.name {
            validate_user_name(self.base.manager, n)?;
            self.base.check_reserved(n)?;
        }
        if let Some(h) = &update.host {
            validate_host(h)?;
        }
        if let Some(p) = &update.password {
            validate_password(p)?;
        }
        let mut c = self.connect_admin().await?;
        self.require_user(&mut c, name, host).await?;
        let acct = account(name, host);
        let (new_name, new_host) = (
            update.name.as_deref().unwrap_or(name),
            update.host.as_deref().unwrap_or(host),
        );
        let renamed = (new_name, new_host) != (name, host);
        if renamed && self.has_user(&mut c, new_name, new_host).await? {
            return Err(Error::bad_request(format!(
                "A user named '{new_name}'@'{new_host}' already exists."
            )));
        }
        if let Some(p) = &update.password {
            exec_sql(
                &mut c,
                &format!("ALTER USER {acct} {}", identified_by(p.expose())),
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        if renamed {
            exec_sql(
                &mut c,
                &format!("RENAME USER {acct} TO {}", account(new_name, new_host)),
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        Ok(())
    }

    async fn change_passwords(&self, users: &[UserSpec]) -> Result<()> {
        self.base.validate_users(users)?;
        let mut c = self.connect_admin().await?;
        for u in users {
            let host = Self::user_host(u.host.as_deref());
            self.require_user(&mut c, &u.name, host).await?;
        }
        for u in users {
            let acct = account(&u.name, Self::user_host(u.host.as_deref()));
            exec_sql(
                &mut c,
                &format!("ALTER USER {acct} {}", identified_by(u.password.expose())),
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        Ok(())
    }
}

#[async_trait]
impl DatabasesFacet for Mysql {
    async fn create_databases(&self, dbs: &[DatabaseSpec]) -> Result<()> {
        self.create_dbs(dbs, true).await
    }

    async fn list_databases(&self) -> Result<Vec<DatabaseSpec>> {
        let mut c = self.connect_admin().await?;
        let rows = sqlx::query(
            "SELECT CAST(SCHEMA_NAME AS CHAR), CAST(DEFAULT_CHARACTER_SET_NAME AS CHAR), \
             CAST(DEFAULT_COLLATION_NAME AS CHAR) FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME",
        )
        .fetch_all(&mut c)
        .await
        .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        let mut out = Vec::new();
        for r in rows {
            let name: String = r.try_get(0).map_err(|e| self.err(e))?;
            if SYSTEM_DBS.contains(&name.as_str()) || name.starts_with("#mysql50#") {
                continue;
            }
            out.push(DatabaseSpec {
                name,
                character_set: r.try_get(1).map_err(|e| self.err(e))?,
                collate: r.try_get(2).map_err(|e| self.err(e))?,
            });
        }
        Ok(out)
    }

    async fn delete_database(&self, name: &str) -> Result<()> {
        validate_database_name(self.base.manager, name)?;
        let mut c = self.connect_admin().await?;
        if !self.has_db(&mut c, name).await? {
            return Err(Error::not_found("Database", name));
        }
        exec_sql(&mut c, &format!("DROP DATABASE {}", ident(name)))
            .await
            .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        Ok(())
    }

    async fn grant_access(&self, name: &str, host: &str, dbs: &[String]) -> Result<()> {
        let host = self.check_account(name, host)?;
        for d in dbs {
            validate_database_name(self.base.manager, d)?;
        }
        let mut c = self.connect_admin().await?;
        self.require_user(&mut c, name, host).await?;
        for d in dbs {
            if !self.has_db(&mut c, d).await? {
                return Err(Error::not_found("Database", d));
            }
        }
        for d in dbs {
            exec_sql(
                &mut c,
                &format!(
                    "GRANT ALL PRIVILEGES ON {}.* TO {}",
                    grant_db(d),
                    account(name, host)
                ),
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        Ok(())
    }

    async fn revoke_access(&self, name: &str, host: &str, db: &str) -> Result<()> {
        let host = self.check_account(name, host)?;
        validate_database_name(self.base.manager, db)?;
        let mut c = self.connect_admin().await?;
        self.require_user(&mut c, name, host).await?;
        if !self.has_db(&mut c, db).await? {
            return Err(Error::not_found("Database", db));
        }
        let granted = sqlx::query("SELECT 1 FROM mysql.db WHERE User = ? AND Host = ? AND Db = ?")
            .bind(name)
            .bind(host)
            .bind(grant_db_name(db))
            .fetch_optional(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        if granted.is_some() {
            exec_sql(
                &mut c,
                &format!(
                    "REVOKE ALL PRIVILEGES ON {}.* FROM {}",
                    grant_db(db),
                    account(name, host)
                ),
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        Ok(())
    }
}

#[async_trait]
impl RootFacet for Mysql {
    async fn enable_root(&self, password: Option<Secret>) -> Result<Secret> {
        let pw = password.unwrap_or_else(|| Secret::generate(24));
        validate_password(&pw)?;
        let acct = account("root", "%");
        let p = identified_by(pw.expose());
        self.exec(&[
            format!("CREATE USER IF NOT EXISTS {acct} {p}"),
            format!("ALTER USER {acct} {p}"),
            format!("GRANT ALL PRIVILEGES ON *.* TO {acct} WITH GRANT OPTION"),
        ])
        .await?;
        Ok(pw)
    }

    async fn disable_root(&self) -> Result<()> {
        self.exec(&[format!("DROP USER IF EXISTS {}", account("root", "%"))])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(lit("it's\\"), "'it\\'s\\\\'");
        assert_eq!(grant_db("my_db"), "`my\\_db`");
        assert_eq!(unescape_grant_db("my\\_db"), "my_db");
        assert!(crate::base::check_charset("utf8mb4").is_ok());
        assert!(crate::base::check_charset("utf8; DROP").is_err());
    }

    #[test]
    fn statements_carry_the_native_hash_not_the_password() {
        // The server's PASSWORD('password').
        assert_eq!(
            identified_by("password"),
            "IDENTIFIED BY PASSWORD '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19'"
        );
    }
}
