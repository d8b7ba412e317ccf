//! The seed's topology on one machine: several order instances sharing one
//! PostgreSQL database, and the four downstream systems as processes of
//! their own (`role = credit`, …), each on a database of its own with one or
//! more instances, all on an `ordermq broker` process — or on a RocketMQ
//! cluster of two NameServers and two brokers, each a process of its own
//! ([`Trial::with_mq_cluster`]).
//!
//! The topology faults (`instance-crash`, `system-crash`,
//! `rolling-restart`) kill or restart one of these processes at a time
//! under load. What they test are claims about processes: that an order
//! instance's death loses no payment another instance acknowledged, that
//! the relay's leases pass between instances, that a system's group
//! rebalances its queues over the instances still alive, and that no
//! process needs another system's database. A process boundary is the only
//! honest way to test them.
//!
//! The shoppers' requests go to the order instances at random
//! ([`Driver::spread`]), so one order's create, payment, refund and carrier
//! callbacks land on different instances; users' shipments are read from
//! the warehouse's own processes. At the end every process is stopped
//! gracefully and the checker reads the order database and each system's
//! own ([`checker::check_apart`]).
//!
//! [`checker::check_apart`]: crate::checker::check_apart

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ordermq_domain::System;
use ordermq_store::{Databases, Store, StoreOptions};

use super::Trial;
use crate::driver::Driver;
use crate::process::{self, Proc};
use crate::{ChaosError, Database, Options, SECRET};

/// The event key every process of a topology signs and verifies with (one
/// process of the embedded default makes its own; separate processes must
/// share one).
const EVENT_KEYS: &str =
    "chaos-topology:9b1e4f7a2c8d0e3f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b";

/// What a broker logs once it registered with the NameServers.
const REGISTERED: &str = "broker registered";

/// How long a process may take to answer `/healthz` after its start.
const STARTS_WITHIN: Duration = Duration::from_secs(90);

/// How long a process may take to finish what it holds after SIGTERM
/// before it is killed (and the stop counted as unclean).
const STOPS_WITHIN: Duration = Duration::from_secs(30);

/// One process of the topology.
#[derive(Debug)]
pub struct Node {
    /// `order-2`, `credit-1`, …: its log and data directory are named so.
    pub name: String,
    /// `None` for an order instance, else the system it runs.
    pub system: Option<System>,
    pub port: u16,
    proc: Option<Proc>,
}

impl Node {
    /// Whether the node's process runs (started and not killed).
    pub fn is_up(&self) -> bool {
        self.proc.is_some()
    }
}

/// Which node: an order instance or a system's instance, by index into
/// [`Topology::nodes`].
pub type NodeId = usize;

/// The RocketMQ cluster's name in the topology trials that run one.
const CLUSTER: &str = "ChaosCluster";

/// The brokers of a topology's RocketMQ cluster (all masters).
pub const BROKERS: [&str; 2] = ["broker-a", "broker-b"];

/// Two NameServers and the [`BROKERS`], each a process of its own.
#[derive(Debug)]
pub struct MqCluster {
    namesrvs: Vec<(u16, Option<Proc>)>,
    /// Each broker's port and process, in [`BROKERS`] order.
    brokers: Vec<(u16, Option<Proc>)>,
}

impl MqCluster {
    /// `ns1:port;ns2:port`, as clients name the NameServers.
    pub fn namesrv_addr(&self) -> String {
        self.namesrvs
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// The processes of a topology and the systems' own databases.
#[derive(Debug)]
pub struct Topology {
    /// The RocketMQ cluster, when the trial runs one instead of the single
    /// `ordermq broker`.
    pub cluster: Option<MqCluster>,
    /// Order instances first, then each system's instances.
    pub nodes: Vec<Node>,
    /// Each system's own database: its URL, and its name on the trial's
    /// server (dropped with the trial).
    system_databases: BTreeMap<System, (String, String)>,
    /// Stops that needed a `kill -9` after 30 s.
    pub unclean_stops: Vec<String>,
}

impl Topology {
    /// The order instances' ids.
    pub fn orders(&self) -> Vec<NodeId> {
        self.ids(|n| n.system.is_none())
    }

    /// The systems' instances' ids.
    pub fn systems(&self) -> Vec<NodeId> {
        self.ids(|n| n.system.is_some())
    }

    fn ids(&self, keep: impl Fn(&Node) -> bool) -> Vec<NodeId> {
        (0..self.nodes.len())
            .filter(|&i| keep(&self.nodes[i]))
            .collect()
    }
}

impl Trial {
    /// A trial of `orders` order instances and `per_system` instances of
    /// each downstream system, on an `ordermq broker` process and
    /// PostgreSQL: the order database on `options`' server, or on a server
    /// of the trial's own when `options` says SQLite (several processes
    /// share the order database: it takes a server). Each system's
    /// database is a database of its own on the same server. Nothing is
    /// started yet ([`Trial::start_topology`]).
    pub async fn with_topology(
        options: &Options,
        orders: usize,
        per_system: usize,
    ) -> Result<Self, ChaosError> {
        let mut trial = match options.database {
            Database::Sqlite => Self::with_own_postgres(options, true).await?,
            Database::Postgres { .. } | Database::Mysql { .. } => Self::new(options, true).await?,
        };
        let (server, name) = trial
            .server_database
            .clone()
            .ok_or_else(|| ChaosError::Setup("a topology needs PostgreSQL or MySQL".into()))?;
        let mut system_databases = BTreeMap::new();
        for system in System::ALL {
            let own = format!("{name}_{}", system.name());
            let url = ordermq_testkit::databases::create(&server, &own)
                .await
                .map_err(|e| {
                    ChaosError::Setup(format!("cannot create {}'s database: {e}", system.name()))
                })?;
            system_databases.insert(system, (url, own));
        }
        // Every port of the trial distinct: two picked free at the same
        // moment can be the same one, and a node whose port another node
        // already holds would be taken for healthy by that one's answer.
        let mut taken = trial.taken_ports();
        let mut port = || process::free_port_besides(&mut taken);
        trial.providers_port = Some(port()?);
        let mut nodes = Vec::new();
        for i in 1..=orders {
            nodes.push(Node {
                name: format!("order-{i}"),
                system: None,
                port: port()?,
                proc: None,
            });
        }
        for system in System::ALL {
            for i in 1..=per_system {
                nodes.push(Node {
                    name: format!("{}-{i}", system.name()),
                    system: Some(system),
                    port: port()?,
                    proc: None,
                });
            }
        }
        let order_ports: Vec<u16> = nodes
            .iter()
            .filter(|n| n.system.is_none())
            .map(|n| n.port)
            .collect();
        let warehouse_ports: Vec<u16> = nodes
            .iter()
            .filter(|n| n.system == Some(System::Warehouse))
            .map(|n| n.port)
            .collect();
        trial.driver = Driver::spread(&order_ports, SECRET).with_warehouse(&warehouse_ports);
        trial.topology = Some(Topology {
            cluster: None,
            nodes,
            system_databases,
            unclean_stops: Vec::new(),
        });
        Ok(trial)
    }

    /// Runs the topology on two NameServers and two brokers (each a
    /// process of its own, [`Trial::start_mq_cluster`]) instead of the
    /// single `ordermq broker`.
    pub fn with_mq_cluster(mut self) -> Result<Self, ChaosError> {
        let mut taken = self.taken_ports();
        let namesrvs = vec![
            (process::free_port_besides(&mut taken)?, None),
            (process::free_port_besides(&mut taken)?, None),
        ];
        let mut brokers = Vec::new();
        for _ in BROKERS {
            let port = process::free_broker_port(&taken)?;
            taken.extend([port - 2, port, port + 1]);
            brokers.push((port, None));
        }
        self.topology_mut().cluster = Some(MqCluster { namesrvs, brokers });
        Ok(self)
    }

    fn cluster(&self) -> &MqCluster {
        self.topology()
            .cluster
            .as_ref()
            .expect("a topology with a RocketMQ cluster")
    }

    /// Starts the NameServers, then every broker.
    pub async fn start_mq_cluster(&mut self) -> Result<(), ChaosError> {
        let ports: Vec<u16> = self.cluster().namesrvs.iter().map(|(p, _)| *p).collect();
        for (i, port) in ports.into_iter().enumerate() {
            let listen = format!("127.0.0.1:{port}");
            let env = [(
                "ORDERMQ_DATA_DIR".to_owned(),
                self.dir.path().join("namesrv").display().to_string(),
            )];
            let log = self.dir.path().join(format!("namesrv-{}.log", i + 1));
            let mut proc = Proc::spawn(
                "ordermq namesrv",
                &self.bin,
                &["namesrv", "--listen", &listen],
                &env,
                &log,
            )?;
            process::wait_for_port(&mut proc, port, STARTS_WITHIN).await?;
            self.topology_mut()
                .cluster
                .as_mut()
                .expect("cluster")
                .namesrvs[i]
                .1 = Some(proc);
        }
        for i in 0..BROKERS.len() {
            self.start_cluster_broker(i).await?;
        }
        Ok(())
    }

    /// Starts (or restarts, on its port and store) broker `i` of
    /// [`BROKERS`]; returns once it has registered with the NameServers.
    pub async fn start_cluster_broker(&mut self, i: usize) -> Result<(), ChaosError> {
        let name = BROKERS[i];
        let port = self.cluster().brokers[i].0;
        let mut env: BTreeMap<String, String> = self.env().into_iter().collect();
        for key in ["ORDERMQ_NAMESRV_ADDR", "ORDERMQ_EMBEDDED_NAMESRV_PORT"] {
            env.remove(key);
        }
        for (key, value) in [
            ("DATA_DIR", self.dir.path().join(name).display().to_string()),
            ("BROKER_CLUSTER", CLUSTER.to_owned()),
            ("BROKER_NAME", name.to_owned()),
            ("EMBEDDED_BROKER_PORT", port.to_string()),
            ("BROKER_NAMESRV_ADDR", self.cluster().namesrv_addr()),
        ] {
            env.insert(format!("ORDERMQ_{key}"), value);
        }
        let env: Vec<_> = env.into_iter().collect();
        let log = self.dir.path().join(format!("{name}.log"));
        let registered_before = process::count_in_log(&log, REGISTERED);
        let mut proc = Proc::spawn("ordermq broker", &self.bin, &["broker"], &env, &log)?;
        process::wait_for_port(&mut proc, port, STARTS_WITHIN).await?;
        let deadline = std::time::Instant::now() + STARTS_WITHIN;
        while process::count_in_log(&log, REGISTERED) <= registered_before {
            if !proc.is_running() {
                return Err(proc.exited("exited before it registered"));
            }
            if std::time::Instant::now() >= deadline {
                return Err(proc.exited("did not register with the NameServers"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.topology_mut()
            .cluster
            .as_mut()
            .expect("cluster")
            .brokers[i]
            .1 = Some(proc);
        Ok(())
    }

    /// `kill -9` broker `i` of [`BROKERS`].
    pub fn kill_cluster_broker(&mut self, i: usize) {
        if let Some(cluster) = self.topology_mut().cluster.as_mut()
            && let Some(mut proc) = cluster.brokers[i].1.take()
        {
            proc.kill9();
        }
    }

    /// Stops every process of the RocketMQ cluster gracefully: the brokers
    /// first, then the NameServers.
    pub(super) async fn stop_mq_cluster(&mut self) {
        let Some(cluster) = self.topology.as_mut().and_then(|t| t.cluster.as_mut()) else {
            return;
        };
        for (_, proc) in cluster
            .brokers
            .iter_mut()
            .chain(cluster.namesrvs.iter_mut())
        {
            if let Some(mut proc) = proc.take() {
                proc.terminate(STOPS_WITHIN).await;
            }
        }
    }

    /// The NameServers' address when the topology runs a RocketMQ cluster.
    pub(super) fn cluster_namesrv_addr(&self) -> Option<String> {
        self.topology
            .as_ref()
            .and_then(|t| t.cluster.as_ref())
            .map(MqCluster::namesrv_addr)
    }

    /// Every port the trial holds or has picked: its own, the providers',
    /// the nodes' and the RocketMQ cluster's (brokers with their two
    /// neighbours).
    fn taken_ports(&self) -> Vec<u16> {
        let broker = self.ports.broker;
        let mut taken = vec![
            self.ports.http,
            self.ports.namesrv,
            broker - 2,
            broker,
            broker + 1,
        ];
        taken.extend(self.providers_port);
        if let Some(topology) = &self.topology {
            taken.extend(topology.nodes.iter().map(|n| n.port));
            if let Some(cluster) = &topology.cluster {
                taken.extend(cluster.namesrvs.iter().map(|(p, _)| *p));
                for (p, _) in &cluster.brokers {
                    taken.extend([p - 2, *p, p + 1]);
                }
            }
        }
        taken
    }

    /// The trial's topology.
    ///
    /// # Panics
    /// If the trial was not made by [`Trial::with_topology`].
    pub fn topology(&self) -> &Topology {
        self.topology.as_ref().expect("a trial with a topology")
    }

    fn topology_mut(&mut self) -> &mut Topology {
        self.topology.as_mut().expect("a trial with a topology")
    }

    /// The environment of one node: the trial's, with its own address,
    /// data directory, role and (for a system) database.
    fn node_env(&self, id: NodeId) -> Vec<(String, String)> {
        let topology = self.topology();
        let node = &topology.nodes[id];
        let mut env: BTreeMap<String, String> = self.env().into_iter().collect();
        let mut set = |key: &str, value: String| {
            env.insert(format!("ORDERMQ_{key}"), value);
        };
        set("HTTP_ADDR", format!("127.0.0.1:{}", node.port));
        set(
            "DATA_DIR",
            self.dir.path().join(&node.name).display().to_string(),
        );
        set("EVENT_KEYS", EVENT_KEYS.to_owned());
        match node.system {
            None => set("ROLE", "order".to_owned()),
            Some(system) => {
                set("ROLE", system.name().to_owned());
                let (url, _) = &topology.system_databases[&system];
                set(
                    &format!("{}_DATABASE_URL", system.name().to_ascii_uppercase()),
                    url.clone(),
                );
            }
        }
        env.into_iter().collect()
    }

    /// Starts node `id` and waits until it answers `/healthz`.
    pub async fn start_node(&mut self, id: NodeId) -> Result<(), ChaosError> {
        let env = self.node_env(id);
        let (name, port) = {
            let node = &self.topology().nodes[id];
            (node.name.clone(), node.port)
        };
        let log = self.dir.path().join(format!("{name}.log"));
        let mut proc = Proc::spawn("ordermq", &self.bin, &["serve"], &env, &log)?;
        process::wait_for_health(&mut proc, &self.driver.client, port, STARTS_WITHIN)
            .await
            .map_err(|e| ChaosError::Process(format!("{name}: {e}")))?;
        self.topology_mut().nodes[id].proc = Some(proc);
        self.starts += 1;
        Ok(())
    }

    /// Starts every node not running: the systems first (they answer for
    /// their own records), then the order instances.
    pub async fn start_topology(&mut self) -> Result<(), ChaosError> {
        let topology = self.topology();
        let order: Vec<NodeId> = topology
            .systems()
            .into_iter()
            .chain(topology.orders())
            .filter(|&id| !topology.nodes[id].is_up())
            .collect();
        for id in order {
            self.start_node(id).await?;
        }
        Ok(())
    }

    /// `kill -9` node `id`.
    pub fn kill_node(&mut self, id: NodeId) {
        if let Some(mut proc) = self.topology_mut().nodes[id].proc.take() {
            proc.kill9();
        }
    }

    /// SIGTERM to node `id`, and its exit awaited: it finishes what it
    /// holds, then leaves. A node that needs a `kill -9` after
    /// 30 s is noted in [`Topology::unclean_stops`].
    pub async fn stop_node(&mut self, id: NodeId) {
        let topology = self.topology_mut();
        let name = topology.nodes[id].name.clone();
        if let Some(mut proc) = topology.nodes[id].proc.take()
            && !proc.terminate(STOPS_WITHIN).await
        {
            topology.unclean_stops.push(name);
        }
    }

    /// Stops every node gracefully, the order instances first (what they
    /// relay still reaches running systems).
    pub(super) async fn stop_topology(&mut self) {
        let topology = self.topology();
        let order: Vec<NodeId> = topology
            .orders()
            .into_iter()
            .chain(topology.systems())
            .collect();
        for id in order {
            self.stop_node(id).await;
        }
    }

    /// `kill -9` every node (a trial kept or discarded).
    pub(super) fn kill_topology(&mut self) {
        let Some(topology) = &mut self.topology else {
            return;
        };
        let cluster = topology
            .cluster
            .iter_mut()
            .flat_map(|c| c.brokers.iter_mut().chain(c.namesrvs.iter_mut()))
            .map(|(_, proc)| proc);
        for proc in topology
            .nodes
            .iter_mut()
            .map(|n| &mut n.proc)
            .chain(cluster)
        {
            if let Some(mut proc) = proc.take() {
                proc.kill9();
            }
        }
    }

    /// Opens each system's own database, for the check.
    pub(super) async fn open_system_stores(&self) -> Result<BTreeMap<System, Store>, ChaosError> {
        let mut stores = BTreeMap::new();
        for (&system, (url, _)) in &self.topology().system_databases {
            let store = Store::open(
                url,
                &StoreOptions {
                    lanes: false,
                    databases: Databases::System(system),
                    ..StoreOptions::default()
                },
            )
            .await
            .map_err(|e| {
                ChaosError::Setup(format!("cannot open {}'s database: {e}", system.name()))
            })?;
            stores.insert(system, store);
        }
        Ok(stores)
    }

    /// Drops the systems' databases (a trial not kept).
    pub(super) async fn drop_system_databases(&mut self) {
        let Some(topology) = &self.topology else {
            return;
        };
        let Some((server, _)) = &self.server_database else {
            return;
        };
        for (system, (_, name)) in &topology.system_databases {
            if let Err(e) = ordermq_testkit::databases::drop(server, name).await {
                eprintln!(
                    "chaos: cannot drop {}'s database {name}: {e}",
                    system.name()
                );
            }
        }
    }

    /// The log of node `id`.
    pub fn node_log(&self, id: NodeId) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.topology().nodes[id].name))
    }
}
