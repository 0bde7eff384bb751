//! InfraStore on SQLite and PostgreSQL with sqlx (to be written).
