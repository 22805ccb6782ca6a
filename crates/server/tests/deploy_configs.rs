//! The example configurations in `deploy/` load, pass validation and describe one cluster.

use std::collections::BTreeSet;
use std::path::PathBuf;

use fjord_server::ServeConfig;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

#[test]
fn deploy_configs_load_and_agree() {
    let dir = deploy_dir().join("config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "three node configs in {}", dir.display());
    let configs: Vec<ServeConfig> = files
        .iter()
        .map(|f| ServeConfig::from_toml_file(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect();
    let ids: BTreeSet<u64> = configs.iter().map(|c| c.id).collect();
    assert_eq!(ids, BTreeSet::from([1, 2, 3]), "distinct ids");
    for c in &configs {
        assert_eq!(c.peers.0, configs[0].peers.0, "node {}: same peers", c.id);
        let own = &c.peers.0[&c.id];
        let host = own.rsplit_once(':').unwrap().0;
        assert_eq!(
            c.advertised_address(),
            format!("{host}:{}", c.listen.port()),
            "node {} advertises the host of its own entry in peers, with the client port",
            c.id
        );
        let peer_listen = c.peer_listen_address().unwrap();
        assert_ne!(
            peer_listen, c.listen,
            "node {}: a peer port of its own",
            c.id
        );
        assert!(
            own.ends_with(&format!(":{}", peer_listen.port())),
            "node {}",
            c.id
        );
    }
}

#[test]
fn the_unit_runs_the_config_it_installs() {
    let unit = std::fs::read_to_string(deploy_dir().join("systemd/fjord.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/fjord serve --config /etc/fjord/fjord.toml"));
    assert!(unit.contains("Restart=on-failure"));
}
