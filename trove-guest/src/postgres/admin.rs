//! Users, databases and root of PostgreSQL: the [`UsersFacet`], [`DatabasesFacet`] and [`RootFacet`] of
//! [`Postgres`], in SQL over the admin connection.

use async_trait::async_trait;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};

use trove_core::model::{
    validate_database_name, validate_password, validate_user_name, DatabaseSpec, Manager, Secret,
    UserSpec, UserUpdate,
};
use trove_core::ports::{DatabasesFacet, RootFacet, UserInfo, UsersFacet};
use trove_core::{Error, Result};

use super::{exec_sql, Postgres, ADMIN_DB};

/// The superuser `POST /instances/{id}/root` enables (upstream's name).
pub(crate) const ROOT_ROLE: &str = "root";

/// Quotes an identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal as an escape string (`E'...'`), safe whatever `standard_conforming_strings` says.
pub(crate) fn lit(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl Postgres {
    async fn database_exists(&self, c: &mut PgConnection, name: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.is_some())
    }

    async fn role_exists(&self, c: &mut PgConnection, name: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(name)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.is_some())
    }

    async fn user_databases(&self, c: &mut PgConnection) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT datname::text FROM pg_database WHERE NOT datistemplate ORDER BY datname",
        )
        .fetch_all(&mut *c)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(|e| self.err(e)))
            .collect()
    }

    async fn grant(&self, name: &str, dbs: &[String]) -> Result<()> {
        for d in dbs {
            self.exec(
                ADMIN_DB,
                &[format!(
                    "GRANT ALL PRIVILEGES ON DATABASE {} TO {}",
                    ident(d),
                    ident(name)
                )],
            )
            .await?;
            self.exec(
                d,
                &[format!("GRANT ALL ON SCHEMA public TO {}", ident(name))],
            )
            .await?;
        }
        Ok(())
    }

    async fn require_role(&self, c: &mut PgConnection, name: &str) -> Result<()> {
        if self.role_exists(c, name).await? {
            Ok(())
        } else {
            Err(Error::not_found("User", name))
        }
    }

    /// Creates databases; `strict` refuses existing ones (the API), otherwise they are left as they are (prepare).
    pub(super) async fn create_dbs(&self, dbs: &[DatabaseSpec], strict: bool) -> Result<()> {
        self.base.validate_databases(dbs)?;
        if dbs.is_empty() {
            return Ok(());
        }
        let mut c = self.connect_admin(ADMIN_DB).await?;
        let mut todo = Vec::new();
        for db in dbs {
            if !self.database_exists(&mut c, &db.name).await? {
                todo.push(db);
            } else if strict {
                return Err(Error::bad_request(format!(
                    "A database named '{}' already exists.",
                    db.name
                )));
            }
        }
        for db in todo {
            let mut s = format!("CREATE DATABASE {}", ident(&db.name));
            if db.character_set.is_some() || db.collate.is_some() {
                s.push_str(" TEMPLATE template0");
            }
            if let Some(cs) = &db.character_set {
                s.push_str(&format!(" ENCODING {}", lit(cs)));
            }
            if let Some(co) = &db.collate {
                s.push_str(&format!(" LC_COLLATE {} LC_CTYPE {}", lit(co), lit(co)));
            }
            exec_sql(&mut c, &s).await.map_err(|e| self.err(e))?;
            exec_sql(
                &mut c,
                &format!("REVOKE ALL ON DATABASE {} FROM PUBLIC", ident(&db.name)),
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        Ok(())
    }

    /// Creates login roles with their grants; `strict` refuses existing ones (the API), otherwise their password
    /// and grants are set again (prepare).
    pub(super) async fn create_roles(&self, users: &[UserSpec], strict: bool) -> Result<()> {
        self.base.validate_users(users)?;
        if users.is_empty() {
            return Ok(());
        }
        let mut c = self.connect_admin(ADMIN_DB).await?;
        let mut exists = Vec::new();
        for u in users {
            let e = self.role_exists(&mut c, &u.name).await?;
            if e && strict {
                return Err(Error::bad_request(format!(
                    "A user named '{}' already exists.",
                    u.name
                )));
            }
            for d in &u.databases {
                if !self.database_exists(&mut c, d).await? {
                    return Err(Error::not_found("Database", d));
                }
            }
            exists.push(e);
        }
        for (u, e) in users.iter().zip(exists) {
            let verb = if e { "ALTER" } else { "CREATE" };
            exec_sql(
                &mut c,
                &format!(
                    "{verb} ROLE {} LOGIN PASSWORD {}",
                    ident(&u.name),
                    lit(u.password.expose())
                ),
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        for u in users {
            self.grant(&u.name, &u.databases).await?;
        }
        Ok(())
    }

    fn check_user(&self, name: &str) -> Result<()> {
        validate_user_name(Manager::Postgresql, name)?;
        self.base.check_reserved(name)
    }
}

#[async_trait]
impl UsersFacet for Postgres {
    async fn create_users(&self, users: &[UserSpec]) -> Result<()> {
        self.create_roles(users, true).await
    }

    async fn list_users(&self) -> Result<Vec<UserInfo>> {
        let mut c = self.connect_admin(ADMIN_DB).await?;
        let rows = sqlx::query(
            "SELECT r.rolname::text, COALESCE(ARRAY(SELECT d.datname::text FROM pg_database d, aclexplode(d.datacl) a \
               WHERE a.grantee = r.oid AND a.privilege_type = 'CONNECT' ORDER BY d.datname), '{}') \
             FROM pg_roles r WHERE r.rolcanlogin AND r.rolname NOT IN ('os_admin', 'os_repl', 'postgres', 'root') \
               AND r.rolname NOT LIKE 'pg\\_%' ORDER BY r.rolname",
        )
        .fetch_all(&mut c)
        .await
        .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        rows.iter()
            .map(|r| {
                Ok(UserInfo {
                    name: r.try_get(0).map_err(|e| self.err(e))?,
                    host: "%".to_string(),
                    databases: r.try_get(1).map_err(|e| self.err(e))?,
                })
            })
            .collect()
    }

    async fn delete_user(&self, name: &str, _host: &str) -> Result<()> {
        self.check_user(name)?;
        let mut c = self.connect_admin(ADMIN_DB).await?;
        self.require_role(&mut c, name).await?;
        let dbs = self.user_databases(&mut c).await?;
        let _ = c.close().await;
        // What the user owns goes to os_admin (data is kept); its privileges go away in every database.
        for d in &dbs {
            self.exec(
                d,
                &[
                    format!("REASSIGN OWNED BY {} TO os_admin", ident(name)),
                    format!("DROP OWNED BY {}", ident(name)),
                ],
            )
            .await?;
        }
        self.exec(ADMIN_DB, &[format!("DROP ROLE IF EXISTS {}", ident(name))])
            .await
    }

    async fn update_user(&self, name: &str, _host: &str, update: &UserUpdate) -> Result<()> {
        self.check_user(name)?;
        if let Some(n) = &update.name {
            self.check_user(n)?;
        }
        if let Some(p) = &update.password {
            validate_password(p)?;
        }
        if update.host.as_deref().is_some_and(|h| h != "%") {
            return Err(Error::bad_request(
                "PostgreSQL users have no host; only '%' is accepted.",
            ));
        }
        let mut c = self.connect_admin(ADMIN_DB).await?;
        self.require_role(&mut c, name).await?;
        let mut stmts = Vec::new();
        if let Some(n) = update.name.as_deref().filter(|n| *n != name) {
            if self.role_exists(&mut c, n).await? {
                return Err(Error::bad_request(format!(
                    "A user named '{n}' already exists."
                )));
            }
            stmts.push(format!("ALTER ROLE {} RENAME TO {}", ident(name), ident(n)));
        }
        let _ = c.close().await;
        let current = update.name.as_deref().unwrap_or(name);
        if let Some(p) = &update.password {
            stmts.push(format!(
                "ALTER ROLE {} PASSWORD {}",
                ident(current),
                lit(p.expose())
            ));
        }
        self.exec(ADMIN_DB, &stmts).await
    }

    async fn change_passwords(&self, users: &[UserSpec]) -> Result<()> {
        self.base.validate_users(users)?;
        let mut c = self.connect_admin(ADMIN_DB).await?;
        for u in users {
            self.require_role(&mut c, &u.name).await?;
        }
        let _ = c.close().await;
        let stmts: Vec<String> = users
            .iter()
            .map(|u| {
                format!(
                    "ALTER ROLE {} PASSWORD {}",
                    ident(&u.name),
                    lit(u.password.expose())
                )
            })
            .collect();
        self.exec(ADMIN_DB, &stmts).await
    }
}

#[async_trait]
impl DatabasesFacet for Postgres {
    async fn create_databases(&self, dbs: &[DatabaseSpec]) -> Result<()> {
        self.create_dbs(dbs, true).await
    }

    async fn list_databases(&self) -> Result<Vec<DatabaseSpec>> {
        let mut c = self.connect_admin(ADMIN_DB).await?;
        let rows = sqlx::query(
            "SELECT datname::text, pg_encoding_to_char(encoding)::text, datcollate::text FROM pg_database \
             WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY datname",
        )
        .fetch_all(&mut c)
        .await
        .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        rows.iter()
            .map(|r| {
                Ok(DatabaseSpec {
                    name: r.try_get(0).map_err(|e| self.err(e))?,
                    character_set: r.try_get(1).map_err(|e| self.err(e))?,
                    collate: r.try_get(2).map_err(|e| self.err(e))?,
                })
            })
            .collect()
    }

    async fn delete_database(&self, name: &str) -> Result<()> {
        validate_database_name(Manager::Postgresql, name)?;
        if name == ADMIN_DB {
            return Err(Error::bad_request("The database 'postgres' is reserved."));
        }
        let mut c = self.connect_admin(ADMIN_DB).await?;
        if !self.database_exists(&mut c, name).await? {
            return Err(Error::not_found("Database", name));
        }
        exec_sql(
            &mut c,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name)),
        )
        .await
        .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        Ok(())
    }

    async fn grant_access(&self, name: &str, _host: &str, dbs: &[String]) -> Result<()> {
        self.check_user(name)?;
        for d in dbs {
            validate_database_name(Manager::Postgresql, d)?;
        }
        let mut c = self.connect_admin(ADMIN_DB).await?;
        self.require_role(&mut c, name).await?;
        for d in dbs {
            if !self.database_exists(&mut c, d).await? {
                return Err(Error::not_found("Database", d));
            }
        }
        let _ = c.close().await;
        self.grant(name, dbs).await
    }

    async fn revoke_access(&self, name: &str, _host: &str, db: &str) -> Result<()> {
        self.check_user(name)?;
        validate_database_name(Manager::Postgresql, db)?;
        let mut c = self.connect_admin(ADMIN_DB).await?;
        self.require_role(&mut c, name).await?;
        if !self.database_exists(&mut c, db).await? {
            return Err(Error::not_found("Database", db));
        }
        let _ = c.close().await;
        self.exec(
            db,
            &[format!("REVOKE ALL ON SCHEMA public FROM {}", ident(name))],
        )
        .await?;
        self.exec(
            ADMIN_DB,
            &[format!(
                "REVOKE ALL PRIVILEGES ON DATABASE {} FROM {}",
                ident(db),
                ident(name)
            )],
        )
        .await
    }
}

#[async_trait]
impl RootFacet for Postgres {
    async fn enable_root(&self, password: Option<Secret>) -> Result<Secret> {
        let pw = password.unwrap_or_else(|| Secret::generate(24));
        validate_password(&pw)?;
        let mut c = self.connect_admin(ADMIN_DB).await?;
        // Upstream's PostgreSQL root is a superuser named `root` (clients written for upstream log in as it).
        let verb = if self.role_exists(&mut c, ROOT_ROLE).await? {
            "ALTER"
        } else {
            "CREATE"
        };
        exec_sql(
            &mut c,
            &format!(
                "{verb} ROLE {ROOT_ROLE} SUPERUSER LOGIN PASSWORD {}",
                lit(pw.expose())
            ),
        )
        .await
        .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        Ok(pw)
    }

    async fn disable_root(&self) -> Result<()> {
        let mut c = self.connect_admin(ADMIN_DB).await?;
        if self.role_exists(&mut c, ROOT_ROLE).await? {
            exec_sql(
                &mut c,
                &format!("ALTER ROLE {ROOT_ROLE} NOLOGIN PASSWORD NULL"),
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(lit("it's\\"), "E'it\\'s\\\\'");
    }
}
