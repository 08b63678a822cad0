//! Starting and stopping the API server, as a library function so that the
//! CLI, the in-process tests and later roles (workers) share one path:
//! validate the config, make the data directory, load or create the
//! account, open the catalog (migrations run here), bind, serve.

use crate::accounts::{ensure_default_account, AccountError, Accounts, Bootstrap};
use crate::api::{http, AppState};
use crate::blobstore::{self, BlobError};
use crate::catalog::{blobs, Catalog, CatalogError};
use crate::config::{Config, ConfigError};
use crate::export::ExportWorkers;
use crate::net;
use crate::ops::{self, Ops};
use crate::pipeline::{node_name, Workers};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("server task ended abnormally: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("blob store: {0}")]
    Blobs(#[from] BlobError),
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
}

/// Which roles a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Serve the API.
    pub api: bool,
    /// Run import workers.
    pub workers: bool,
}

impl Default for Roles {
    fn default() -> Self {
        Roles {
            api: true,
            workers: true,
        }
    }
}

/// One listener being served.
#[derive(Debug)]
struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await?.map_err(ServerError::Serve)
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// `None` for a worker-only process.
    api: Option<Running>,
    ops: Option<Running>,
    state: Arc<AppState>,
    bootstrap: Bootstrap,
    /// A worker-only process waits on this until shut down.
    idle: Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>,
    workers: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Server {
    /// The API's bound address (the real port when `listen` asked for port
    /// 0); `0.0.0.0:0` for a worker-only process.
    pub fn addr(&self) -> SocketAddr {
        self.api
            .as_ref()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |r| r.addr)
    }

    /// The `ops_listen` address, when configured.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops.as_ref().map(|r| r.addr)
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Whether the account was configured, loaded or just created; a created
    /// account's key is shown once by the caller (the CLI).
    pub fn bootstrap(&self) -> &Bootstrap {
        &self.bootstrap
    }

    /// Stops accepting, lets requests in flight finish, hands running
    /// imports back to the queue (another start resumes them), closes the
    /// catalog.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some((stop, task)) = self.workers.take() {
            stop.cancel();
            let _ = task.await;
        }
        let mut served = Ok(());
        for r in [self.api.take(), self.ops.take()].into_iter().flatten() {
            let r = r.stop().await;
            served = served.and(r);
        }
        self.state.catalog.close().await;
        served
    }

    /// Waits until the server stops on its own (it normally does not).
    pub async fn wait(mut self) -> Result<(), ServerError> {
        match self.api.take() {
            Some(mut api) => (&mut api.task).await?.map_err(ServerError::Serve),
            None => {
                if let Some((_tx, rx)) = self.idle.take() {
                    let _ = rx.await;
                }
                Ok(())
            }
        }
    }
}

/// Prepares everything and starts serving with workers; returns once the
/// socket listens.
pub async fn start(config: Config) -> Result<Server, ServerError> {
    start_roles(config, Roles::default()).await
}

/// Like [`start`], choosing the roles: `api: false` binds only
/// `ops_listen`, if set (the `worker` command), `workers: false` only serves
/// (`serve --no-workers`). The API's and the operator's routers are put
/// together here, so neither module needs the other.
pub async fn start_roles(mut config: Config, roles: Roles) -> Result<Server, ServerError> {
    config.validate()?;
    // Everything this process creates is private to its user (issue 16).
    crate::private_fs::restrict_umask();
    crate::private_fs::secure_data_dir(&config.data_dir).map_err(|source| {
        ServerError::DataDir {
            path: config.data_dir.clone(),
            source,
        }
    })?;
    let images = blobs::local_blob_dir(&config.data_dir);
    crate::private_fs::create_dir_all(&images).map_err(|source| ServerError::DataDir {
        path: images.clone(),
        source,
    })?;
    let bootstrap = ensure_default_account(&config.data_dir, &mut config.accounts)?;
    let catalog = Catalog::open(&config).await?;
    let blobs = blobstore::open(&config.blobs, &config.data_dir)?;
    let config = Arc::new(config);
    let state = Arc::new(AppState::new(
        config.clone(),
        catalog.clone(),
        blobs.clone(),
    ));
    let workers = roles.workers.then(|| {
        let stop = CancellationToken::new();
        let node = node_name();
        let exports = ExportWorkers {
            config: config.clone(),
            catalog: catalog.clone(),
            node: node.clone(),
            wake: state.export_wake.clone(),
            cancels: state.export_cancels.clone(),
            shutdown: stop.clone(),
        };
        let workers = Workers {
            config: config.clone(),
            catalog,
            accounts: Arc::new(Accounts::new(&config.accounts)),
            blobs,
            node,
            wake: state.wake.clone(),
            shutdown: stop.clone(),
        };
        let both = async move {
            tokio::join!(workers.run(), exports.run());
        };
        (stop, tokio::spawn(both))
    });
    let ops = Ops::new(state.catalog.clone(), state.blobs.clone());
    let ops_running = match &config.ops_listen {
        Some(addr) => Some(listen(addr, None, &config, ops::router(ops.clone()), "ops").await?),
        None => None,
    };
    let api = if roles.api {
        let tls = match config.tls.files() {
            Some((cert, key)) => Some(crate::net::tls::acceptor(cert, key)?),
            None => None,
        };
        // With `ops_listen`, only /healthz stays beside the API.
        let app = match ops_running {
            Some(_) => http::router(state.clone()).merge(ops::health_router()),
            None => http::router(state.clone()).merge(ops::router(ops)),
        };
        Some(listen(&config.listen, tls, &config, app, "api").await?)
    } else {
        None
    };
    Ok(Server {
        api,
        ops: ops_running,
        state,
        bootstrap,
        idle: Some(oneshot::channel()),
        workers,
    })
}

/// Binds `addr` and serves `app` there with the `[net]` settings.
async fn listen(
    addr: &str,
    tls: Option<tokio_rustls::TlsAcceptor>,
    config: &Config,
    app: axum::Router,
    name: &'static str,
) -> Result<Running, ServerError> {
    let (tcp, bound) = bind(addr).await?;
    let listener = net::Listener {
        tcp,
        tls,
        table: net::conns::Table::new(config.net.max_connections),
        timeouts: config.net.timeouts(),
        name,
    };
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(net::serve(listener, app, async move {
        let _ = rx.await;
    }));
    Ok(Running {
        addr: bound,
        stop: Some(tx),
        task,
    })
}

async fn bind(listen: &str) -> Result<(tokio::net::TcpListener, SocketAddr), ServerError> {
    let err = |source| ServerError::Bind {
        addr: listen.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    Ok((listener, addr))
}
