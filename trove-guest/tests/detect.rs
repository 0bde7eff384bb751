//! Engine detection on this machine (the project's machines have every engine installed; CI must too).

use trove_core::model::Manager;
use trove_guest::detect_engines;

#[test]
fn finds_the_installed_engines_and_reports_the_missing_ones() {
    let d = detect_engines();
    for m in [
        Manager::Mysql,
        Manager::Mariadb,
        Manager::Postgresql,
        Manager::Redis,
    ] {
        let e = d
            .found
            .iter()
            .find(|e| e.manager == m)
            .unwrap_or_else(|| panic!("{m} not found: {:?}", d.missing));
        assert!(
            !e.version.is_empty() && e.version.chars().next().is_some_and(|c| c.is_ascii_digit()),
            "{e:?}"
        );
        assert!(e.bin_dir.is_dir(), "{e:?}");
    }
    let missing: Vec<Manager> = d.missing.iter().map(|(m, _)| *m).collect();
    assert_eq!(missing, [Manager::Mongodb, Manager::Cassandra]);
    let mysql = d
        .found
        .iter()
        .find(|e| e.manager == Manager::Mysql)
        .expect("mysql");
    assert!(
        mysql.note.as_deref().unwrap_or("").contains("MariaDB"),
        "mysql is served by MariaDB here"
    );
}
