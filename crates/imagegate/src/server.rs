//! Starting and stopping the API server, as a library function so that the
//! CLI, the in-process tests and later roles (workers) share one path:
//! validate the config, make the data directory, load or create the
//! account, open the catalog (migrations run here), bind, serve.

use crate::accounts::{ensure_default_account, AccountError, Accounts, Bootstrap};
use crate::api::{http, AppState};
use crate::blobstore::{self, BlobError};
use crate::catalog::{blobs, Catalog, CatalogError};
use crate::config::{Config, ConfigError};
use crate::pipeline::{node_name, Workers};
use axum::serve::ListenerExt;
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

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    bootstrap: Bootstrap,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    workers: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Server {
    /// The bound address (the real port when `listen` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
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
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some((stop, task)) = self.workers.take() {
            stop.cancel();
            let _ = task.await;
        }
        let served = (&mut self.task).await?;
        self.state.catalog.close().await;
        served.map_err(ServerError::Serve)
    }

    /// Waits until the server stops on its own (it normally does not).
    pub async fn wait(mut self) -> Result<(), ServerError> {
        let served = (&mut self.task).await?;
        served.map_err(ServerError::Serve)
    }
}

/// Prepares everything and starts serving with workers; returns once the
/// socket listens.
pub async fn start(config: Config) -> Result<Server, ServerError> {
    start_roles(config, Roles::default()).await
}

/// Like [`start`], choosing the roles: `api: false` binds nothing (the
/// `worker` command), `workers: false` only serves (`serve --no-workers`).
pub async fn start_roles(mut config: Config, roles: Roles) -> Result<Server, ServerError> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let images = blobs::local_blob_dir(&config.data_dir);
    std::fs::create_dir_all(&images).map_err(|source| ServerError::DataDir {
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
        let workers = Workers {
            config: config.clone(),
            catalog,
            accounts: Arc::new(Accounts::new(&config.accounts)),
            blobs,
            node: node_name(),
            wake: state.wake.clone(),
            shutdown: stop.clone(),
        };
        (stop, tokio::spawn(workers.run()))
    });
    if !roles.api {
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = rx.await;
            Ok(())
        });
        return Ok(Server {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            state,
            bootstrap,
            shutdown: Some(tx),
            task,
            workers,
        });
    }

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen.clone(),
        source,
    })?;
    // Small request/response pairs: do not let Nagle hold them back.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let (tx, rx) = oneshot::channel::<()>();
    let app = http::router(state.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    Ok(Server {
        addr,
        state,
        bootstrap,
        shutdown: Some(tx),
        task,
        workers,
    })
}
