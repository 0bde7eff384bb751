//! Local-process compute, directory volumes and filesystem backups (to be written).
