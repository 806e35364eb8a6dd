//! The service's logic end to end without root and without a bus daemon: the service served
//! on one end of a peer-to-peer connection, over the in-memory backend with polkit off (as
//! `--no-polkit` does), and the `snapback-dbus` proxies on the other end. The data path is
//! the root tests' business (service_api, service_rollback); these check the calls, the
//! replies, the error names, the properties and the order of the signals.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use snapback_dbus::{
    snapshot_path, Error, ManagerProxy, SnapshotProxy, BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH,
    SNAPSHOT_INTERFACE,
};
use snapbackd::backend::memory::{MemoryBackend, MemoryOptions, MemoryVolume};
use snapbackd::backend::Backend;
use snapbackd::cleanup::CleanupConfig;
use snapbackd::service::polkit::Authorizer;
use snapbackd::service::{self, Running};
use zbus::connection::Builder;
use zbus::fdo::{IntrospectableProxy, ObjectManager};
use zbus::message::Type;
use zbus::{MatchRule, MessageStream, ObjectPath, OwnedObjectPath, OwnedVariant, Variant};

const MIB: u64 = 1 << 20;
/// Longer than anything here takes; a hang fails instead of blocking the test run.
const PATIENCE: Duration = Duration::from_secs(20);

/// A signal as the client saw it, reduced to what the tests compare.
#[derive(Debug, Clone, PartialEq)]
enum Signal {
    InterfacesAdded(String),
    InterfacesRemoved(String),
    SnapshotCreated(String),
    SnapshotRemoved(String),
    RollbackScheduled(String),
    MergeFinished(String, bool, String),
    /// Path and the changed properties with their values.
    PropertiesChanged(String, BTreeMap<String, String>),
}

/// The service on one end of a socket pair, a client connection on the other.
struct Peer {
    backend: Arc<MemoryBackend>,
    client: zbus::Connection,
    /// Every message the client receives, in order.
    messages: MessageStream,
    running: Option<Running>,
    _server: zbus::Connection,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }
}

fn volumes() -> Vec<MemoryVolume> {
    vec![MemoryVolume::new("root", 8 * MIB, true), MemoryVolume::new("home", 8 * MIB, false)]
}

fn no_cleanup() -> CleanupConfig {
    CleanupConfig { enabled: false, ..CleanupConfig::default() }
}

async fn serve(cleanup: CleanupConfig) -> Peer {
    let backend = Arc::new(
        MemoryBackend::new(MemoryOptions { volumes: volumes(), ..MemoryOptions::default() })
            .unwrap(),
    );
    let (server_end, client_end) = UnixStream::pair().unwrap();
    let guid = zbus::Guid::generate();
    // An object at build time makes zbus start dispatching before `build` returns; objects
    // added later on a connection that had none could miss the first calls.
    let (server, client) = tokio::join!(
        Builder::unix_stream(server_end)
            .server(guid)
            .p2p()
            .serve_at(MANAGER_PATH, ObjectManager)
            .build(),
        Builder::unix_stream(client_end).p2p().build()
    );
    let (server, client) = (server.unwrap(), client.unwrap());
    // Signals only, so that replies never fill its queue; deep enough for any test here.
    let rule = MatchRule::builder().msg_type(Type::Signal).build().unwrap();
    let messages =
        MessageStream::for_match_rule(rule, &client, NonZeroUsize::new(4096)).await.unwrap();
    let as_backend: Arc<dyn Backend> = backend.clone();
    let running =
        service::start(&server, as_backend, Authorizer::AllowAllForTesting, cleanup).await.unwrap();
    Peer { backend, client, messages, running: Some(running), _server: server }
}

impl Peer {
    async fn manager(&self) -> ManagerProxy<'static> {
        ManagerProxy::new(&self.client).await.unwrap()
    }

    async fn set(&self, path: &OwnedObjectPath) -> SnapshotProxy<'static> {
        SnapshotProxy::builder(&self.client)
            .path(path.clone())
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .unwrap()
    }

    /// The next signal the client receives.
    async fn signal(&mut self) -> Signal {
        let message = tokio::time::timeout(PATIENCE, self.messages.next())
            .await
            .expect("a signal in time")
            .expect("the connection is open")
            .unwrap();
        parse(&message)
    }

    /// The signals that reached the client before now.
    fn arrived(&mut self) -> Vec<Signal> {
        let mut arrived = Vec::new();
        while let Some(Some(message)) = self.messages.next().now_or_never() {
            arrived.push(parse(&message.unwrap()));
        }
        arrived
    }

    /// The next signals without merge progress (how many reports a merge makes, and which
    /// state change one comes with, depends on timing).
    async fn signals_but_progress(&mut self, count: usize) -> Vec<Signal> {
        let mut seen = Vec::new();
        while seen.len() < count {
            match self.signal().await {
                Signal::PropertiesChanged(path, mut changed) => {
                    changed.remove("MergeProgress");
                    if !changed.is_empty() {
                        seen.push(Signal::PropertiesChanged(path, changed));
                    }
                }
                signal => seen.push(signal),
            }
        }
        seen
    }

    /// Fails when a signal arrives within a moment.
    async fn no_signal(&mut self) {
        let next = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                let message = self.messages.next().await.unwrap().unwrap();
                let progress = message.header().member().is_some_and(|m| m == "PropertiesChanged")
                    && message
                        .body()
                        .deserialize::<(String, HashMap<String, OwnedVariant>, Vec<String>)>()
                        .is_ok_and(|(_, changed, _)| changed.keys().all(|k| k == "MergeProgress"));
                if !progress {
                    return message;
                }
            }
        })
        .await;
        if let Ok(message) = next {
            panic!("unexpected signal: {message:?}");
        }
    }
}

/// A signal as the tests compare it.
fn parse(message: &zbus::Message) -> Signal {
    assert_eq!(message.message_type(), Type::Signal);
    let header = message.header();
    let path = header.path().unwrap().to_string();
    let member = header.member().unwrap().to_string();
    let body = message.body();
    match member.as_str() {
        "InterfacesAdded" => {
            let (object, _): (OwnedObjectPath, HashMap<String, HashMap<String, OwnedVariant>>) =
                body.deserialize().unwrap();
            Signal::InterfacesAdded(object.to_string())
        }
        "InterfacesRemoved" => {
            let (object, _): (OwnedObjectPath, Vec<String>) = body.deserialize().unwrap();
            Signal::InterfacesRemoved(object.to_string())
        }
        "SnapshotCreated" | "SnapshotRemoved" | "RollbackScheduled" => {
            assert_eq!(
                (path.as_str(), header.interface().unwrap().as_str()),
                (MANAGER_PATH, MANAGER_INTERFACE)
            );
            let set: OwnedObjectPath = body.deserialize().unwrap();
            let set = set.to_string();
            match member.as_str() {
                "SnapshotCreated" => Signal::SnapshotCreated(set),
                "SnapshotRemoved" => Signal::SnapshotRemoved(set),
                _ => Signal::RollbackScheduled(set),
            }
        }
        "MergeFinished" => {
            let (set, ok, text): (OwnedObjectPath, bool, String) = body.deserialize().unwrap();
            Signal::MergeFinished(set.to_string(), ok, text)
        }
        "PropertiesChanged" => {
            let (interface, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                body.deserialize().unwrap();
            assert_eq!(interface, SNAPSHOT_INTERFACE);
            let changed = changed.into_iter().map(|(k, v)| (k, show(&v))).collect();
            Signal::PropertiesChanged(path, changed)
        }
        other => panic!("unexpected signal {other} on {path}"),
    }
}

fn show(value: &Variant<'_>) -> String {
    match value {
        Variant::Str(s) => s.to_string(),
        Variant::Bool(b) => b.to_string(),
        Variant::U64(n) => n.to_string(),
        Variant::F64(f) => f.to_string(),
        Variant::Dict(_) => {
            let map: HashMap<String, String> = value.try_clone().unwrap().try_into().unwrap();
            format!("{:?}", map.into_iter().collect::<BTreeMap<_, _>>())
        }
        other => format!("{other:?}"),
    }
}

fn no_options() -> HashMap<&'static str, Variant<'static>> {
    HashMap::new()
}

fn changed(path: &str, properties: &[(&str, &str)]) -> Signal {
    Signal::PropertiesChanged(
        path.to_string(),
        properties.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_returns_a_path_that_is_on_the_bus_at_once() {
    let mut peer = serve(no_cleanup()).await;
    let manager = peer.manager().await;
    assert_eq!(manager.backend().await.unwrap(), "memory");

    let options = HashMap::from([
        ("userdata", Variant::from(HashMap::from([("dnf.transaction", "42")]))),
        ("important", Variant::from(true)),
        ("cow-size", Variant::from(MIB)),
    ]);
    let path = manager.snapshot(&["root", "home"], "before upgrade", options).await.unwrap();
    assert_eq!(path, snapshot_path(1));
    let p = path.to_string();
    // The reply came after the object and its announcement: one connection keeps its order.
    assert_eq!(
        peer.arrived(),
        vec![Signal::InterfacesAdded(p.clone()), Signal::SnapshotCreated(p.clone())]
    );
    // No wait: the reply left after the object was exported.
    let xml = IntrospectableProxy::builder(&peer.client)
        .destination(BUS_NAME)
        .path(path.clone())
        .build()
        .await
        .unwrap()
        .introspect()
        .await
        .unwrap();
    assert!(xml.contains(&format!("<interface name=\"{SNAPSHOT_INTERFACE}\">")), "{xml}");

    let set = peer.set(&path).await;
    assert_eq!(set.id().await.unwrap(), 1);
    assert_eq!(set.description().await.unwrap(), "before upgrade");
    assert_eq!(set.volumes().await.unwrap(), vec!["home".to_string(), "root".to_string()]);
    assert_eq!(set.state().await.unwrap(), "active");
    assert_eq!(set.size_bytes().await.unwrap(), 2 * MIB, "cow-size per volume");
    assert_eq!(set.merge_progress().await.unwrap(), 0.0);
    assert_eq!(
        set.userdata().await.unwrap(),
        HashMap::from([("dnf.transaction".to_string(), "42".to_string())])
    );
    assert!(set.important().await.unwrap());
    assert_eq!(set.boot_entry().await.unwrap(), "");
    assert!(set.created().await.unwrap() > 0);

    let status = manager.status().await.unwrap();
    assert_eq!(status.backend, "memory");
    assert_eq!(status.volumes["root"].snapshots, vec![snapshot_path(1)]);
    assert_eq!(status.volumes["home"].snapshots, vec![snapshot_path(1)]);

    // An empty list means the auto volumes; a data-path failure leaves nothing behind.
    peer.backend.fail_next_snapshot("injected: the origin did not suspend");
    let err = manager.snapshot(&[], "fails", no_options()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Backend(m) if m == "injected: the origin did not suspend"),
        "{err:?}"
    );
    peer.no_signal().await;
    let second = manager.snapshot(&[], "auto", no_options()).await.unwrap();
    assert_eq!(second, snapshot_path(2), "the failed attempt used no id");
    assert_eq!(peer.set(&second).await.volumes().await.unwrap(), vec!["root".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_metadata_changes_the_properties_and_says_so() {
    let mut peer = serve(no_cleanup()).await;
    let manager = peer.manager().await;
    let path = manager.snapshot(&["root"], "dnf: pending", no_options()).await.unwrap();
    peer.signals_but_progress(2).await;

    manager
        .update_metadata(&path, "dnf: upgrade bash", HashMap::from([("tid", "7")]), no_options())
        .await
        .unwrap();
    let set = peer.set(&path).await;
    assert_eq!(set.description().await.unwrap(), "dnf: upgrade bash");
    assert_eq!(set.userdata().await.unwrap()["tid"], "7");
    // One PropertiesChanged per property, as zbus emits them.
    assert_eq!(
        peer.signals_but_progress(2).await,
        vec![
            changed(path.as_str(), &[("Description", "dnf: upgrade bash")]),
            changed(path.as_str(), &[("Userdata", "{\"tid\": \"7\"}")]),
        ]
    );

    // An empty description keeps the old one; userdata merges.
    manager
        .update_metadata(&path, "", HashMap::from([("user", "ann")]), no_options())
        .await
        .unwrap();
    assert_eq!(set.description().await.unwrap(), "dnf: upgrade bash");
    assert_eq!(
        peer.signal().await,
        changed(path.as_str(), &[("Userdata", "{\"tid\": \"7\", \"user\": \"ann\"}")])
    );
    // The same update again changes nothing, and says nothing.
    manager
        .update_metadata(&path, "", HashMap::from([("user", "ann")]), no_options())
        .await
        .unwrap();
    peer.no_signal().await;

    let bad = HashMap::from([("nope", Variant::from(1u32))]);
    let err = manager.update_metadata(&path, "", HashMap::new(), bad).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("'nope'")), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_now_merges_then_the_set_goes_with_merge_finished() {
    let mut peer = serve(no_cleanup()).await;
    let manager = peer.manager().await;
    let path = manager.snapshot(&["root"], "", no_options()).await.unwrap();
    peer.signals_but_progress(2).await;
    let p = path.to_string();

    peer.backend.hold_merges(true);
    assert_eq!(manager.rollback(&path, no_options()).await.unwrap(), "merging");
    let set = peer.set(&path).await;
    assert_eq!(set.state().await.unwrap(), "merging");
    assert_eq!(peer.signal().await, changed(&p, &[("State", "merging")]));
    assert_eq!(manager.status().await.unwrap().merging, vec![path.clone()]);
    assert_eq!(manager.status().await.unwrap().volumes["root"].state, "merging");

    // While it merges: a second Rollback, a cancel and a Delete are refused by name.
    let err = manager.rollback(&path, no_options()).await.unwrap_err();
    assert!(matches!(&err, Error::AlreadyMerging(m) if m.contains("already merging")), "{err:?}");
    let err = manager.cancel_rollback(&path).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyMerging(_)), "{err:?}");
    let err = manager.delete(&path).await.unwrap_err();
    assert!(matches!(&err, Error::Busy(m) if m.contains("is merging")), "{err:?}");
    let err = set.delete().await.unwrap_err();
    assert!(matches!(err, Error::Busy(_)), "{err:?}");
    peer.no_signal().await;

    peer.backend.hold_merges(false);
    assert_eq!(
        peer.signals_but_progress(3).await,
        vec![
            Signal::InterfacesRemoved(p.clone()),
            Signal::SnapshotRemoved(p.clone()),
            Signal::MergeFinished(p.clone(), true, String::new()),
        ]
    );
    assert!(set.state().await.is_err(), "the object is gone");
    let status = manager.status().await.unwrap();
    assert!(status.merging.is_empty() && status.volumes["root"].snapshots.is_empty());
    assert_eq!(status.volumes["root"].state, "active");
    assert!(matches!(manager.delete(&path).await.unwrap_err(), Error::NotFound(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_of_a_busy_volume_is_scheduled_until_cancelled() {
    let mut peer = serve(no_cleanup()).await;
    let manager = peer.manager().await;
    let path = manager.snapshot(&["root"], "", no_options()).await.unwrap();
    peer.signals_but_progress(2).await;
    let p = path.to_string();
    let set = peer.set(&path).await;

    peer.backend.set_busy("root", true);
    assert_eq!(set.rollback(no_options()).await.unwrap(), "scheduled");
    assert_eq!(
        peer.arrived(),
        vec![changed(&p, &[("State", "merge-scheduled")]), Signal::RollbackScheduled(p.clone())]
    );
    assert_eq!(set.state().await.unwrap(), "merge-scheduled");
    let status = manager.status().await.unwrap();
    assert_eq!(status.pending, vec![path.clone()]);
    assert_eq!(status.volumes["root"].state, "merge-scheduled");

    // Asking again is no error (docs/set-lifecycle.md): the same answer, nothing changes.
    assert_eq!(manager.rollback(&path, no_options()).await.unwrap(), "scheduled");
    assert_eq!(peer.signal().await, Signal::RollbackScheduled(p.clone()));
    // A scheduled rollback must be cancelled before the set can go, and a new set over the
    // volume waits for it too.
    assert!(
        matches!(manager.delete(&path).await.unwrap_err(), Error::Busy(m) if m.contains("CancelRollback"))
    );
    let err = manager.snapshot(&["root"], "", no_options()).await.unwrap_err();
    assert!(matches!(&err, Error::Busy(m) if m.contains("rollback to snapshot set 1")), "{err:?}");

    manager.cancel_rollback(&path).await.unwrap();
    assert_eq!(set.state().await.unwrap(), "active");
    assert_eq!(peer.signal().await, changed(&p, &[("State", "active")]));
    let err = manager.cancel_rollback(&path).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("no scheduled rollback")),
        "{err:?}"
    );
    assert!(manager.status().await.unwrap().pending.is_empty());

    manager.delete(&path).await.unwrap();
    assert_eq!(
        peer.arrived(),
        vec![Signal::InterfacesRemoved(p.clone()), Signal::SnapshotRemoved(p)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_merge_is_merge_failed_and_a_retry_finishes_it() {
    let mut peer = serve(no_cleanup()).await;
    let manager = peer.manager().await;
    let path = manager.snapshot(&["root"], "", no_options()).await.unwrap();
    peer.signals_but_progress(2).await;
    let p = path.to_string();
    let set = peer.set(&path).await;

    peer.backend.fail_next_merge_step("injected: read error on the COW");
    peer.backend.hold_merges(true);
    assert_eq!(manager.rollback(&path, no_options()).await.unwrap(), "merging");
    assert_eq!(peer.signal().await, changed(&p, &[("State", "merging")]));
    peer.backend.hold_merges(false);
    let message = "injected: read error on the COW; run Rollback again to resume the merge";
    assert_eq!(
        peer.signals_but_progress(2).await,
        vec![
            changed(&p, &[("State", "merge-failed")]),
            Signal::MergeFinished(p.clone(), false, message.to_string()),
        ]
    );
    assert_eq!(set.state().await.unwrap(), "merge-failed");
    assert_eq!(manager.status().await.unwrap().volumes["root"].state, "merge-failed");
    // Half rolled back: the set must stay until its merge is finished.
    let err = manager.delete(&path).await.unwrap_err();
    assert!(matches!(&err, Error::Busy(m) if m.contains(message)), "{err:?}");

    assert_eq!(manager.rollback(&path, no_options()).await.unwrap(), "merging");
    assert_eq!(
        peer.signals_but_progress(4).await,
        vec![
            changed(&p, &[("State", "merging")]),
            Signal::InterfacesRemoved(p.clone()),
            Signal::SnapshotRemoved(p.clone()),
            Signal::MergeFinished(p, true, String::new()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sets_paths_and_volumes_are_not_found() {
    let mut peer = serve(no_cleanup()).await;
    let manager = peer.manager().await;
    let missing = snapshot_path(99);
    let not_a_set = ObjectPath::try_from("/org/snapback/Snapback1/snapshot/x").unwrap();
    for path in [missing.as_ref(), not_a_set.clone()] {
        let errors = [
            manager.rollback(&path, no_options()).await.unwrap_err(),
            manager.cancel_rollback(&path).await.unwrap_err(),
            manager.delete(&path).await.unwrap_err(),
            manager.update_metadata(&path, "d", HashMap::new(), no_options()).await.unwrap_err(),
        ];
        for err in errors {
            assert!(matches!(&err, Error::NotFound(_)), "{path}: {err:?}");
        }
    }
    let err = manager.delete(&missing).await.unwrap_err();
    assert!(matches!(&err, Error::NotFound(m) if m == "no snapshot set with id 99"), "{err:?}");
    let err = manager.delete(&not_a_set).await.unwrap_err();
    assert!(matches!(&err, Error::NotFound(m) if m.contains("is not a snapshot set")), "{err:?}");
    let err = manager.snapshot(&["var"], "", no_options()).await.unwrap_err();
    assert!(matches!(&err, Error::NotFound(m) if m.contains("\"var\"")), "{err:?}");
    // The object of a set that does not exist is not there either.
    assert!(peer.set(&missing).await.state().await.is_err());
    peer.no_signal().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pool_write_refuses_delete_and_keeps_the_object() {
    let mut peer = serve(no_cleanup()).await;
    let manager = peer.manager().await;
    let path = manager.snapshot(&["root"], "", no_options()).await.unwrap();
    peer.signals_but_progress(2).await;

    peer.backend.fail_next_pool_write();
    let err = manager.delete(&path).await.unwrap_err();
    assert!(matches!(&err, Error::Backend(m) if m.contains("registry")), "{err:?}");
    peer.no_signal().await;
    assert_eq!(peer.set(&path).await.state().await.unwrap(), "active");

    manager.delete(&path).await.unwrap();
    let p = path.to_string();
    assert_eq!(
        peer.signals_but_progress(2).await,
        vec![Signal::InterfacesRemoved(p.clone()), Signal::SnapshotRemoved(p)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleanup_policy_removes_the_oldest_set_after_a_new_one() {
    let cleanup = CleanupConfig {
        enabled: true,
        number_limit: 2,
        min_age_seconds: 0,
        pool_usage_limit_percent: 100,
        interval_seconds: 0,
        ..CleanupConfig::default()
    };
    let mut peer = serve(cleanup).await;
    let manager = peer.manager().await;
    for _ in 0..2 {
        manager.snapshot(&["root"], "", no_options()).await.unwrap();
    }
    peer.signals_but_progress(4).await;

    let third = manager.snapshot(&["root"], "", no_options()).await.unwrap();
    assert_eq!(third, snapshot_path(3));
    let (first, third) = (snapshot_path(1).to_string(), third.to_string());
    assert_eq!(
        peer.arrived(),
        vec![
            Signal::InterfacesAdded(third.clone()),
            Signal::SnapshotCreated(third),
            Signal::InterfacesRemoved(first.clone()),
            Signal::SnapshotRemoved(first),
        ]
    );
    let status = manager.status().await.unwrap();
    assert_eq!(status.volumes["root"].snapshots, vec![snapshot_path(2), snapshot_path(3)]);
}
