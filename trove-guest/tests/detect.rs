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
    // The reported directory works as the datastore version's image.
    for e in &d.found {
        let mut v = trove_core::testing::sample_version(e.manager);
        v.image = e.bin_dir.display().to_string();
        let ctx = trove_core::ports::GuestSpec {
            instance_id: uuid::Uuid::new_v4(),
            datastore_version: v,
            flavor: trove_core::testing::sample_flavor(),
            server_dir: std::env::temp_dir().join("unused"),
            volume_path: None,
            bind_address: "127.0.0.1".into(),
            port: 1,
        };
        use trove_core::ports::StrategyFactory;
        trove_guest::EngineStrategyFactory::default()
            .strategy(&ctx)
            .unwrap_or_else(|e2| panic!("image {} of {}: {e2}", e.bin_dir.display(), e.manager));
    }
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
