//! The PostgreSQL wire server: psql, Grafana's PostgreSQL data source and any
//! PostgreSQL driver query driftwatch's tables with no plugin.
//!
//! datafusion-postgres does the protocol work (pgwire, `pg_catalog` for `\d` and the
//! query builder, simple and extended query protocols, `SET`/`SHOW`); this module adds
//! what a security tool needs around it: SCRAM-SHA-256 password authentication with
//! users from the configuration, optional TLS (rustls), a guard that rejects every
//! statement that would change state, and the engine's limits.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::auth::AuthManager;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{
    SCRAM_ITERATIONS, ScramAuth, gen_salted_password, random_nonce,
};
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::cancel::DefaultCancelHandler;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::{
    ClientInfo, ConnectionManager, ErrorHandler, PgWireServerHandlers,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::pgwire::tokio::process_socket;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::Sink;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

pub use crate::error::PgError;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::guard::bound_functions;
use crate::metrics::SqlMetrics;
use crate::sql::{SqlEngine, SqlError, check_read_only, fixed_setting};

/// The PostgreSQL wire server's settings (`[postgres]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PgConfig {
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// 5433: PostgreSQL's own port plus one, so a local PostgreSQL keeps 5432.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Users who may log in (SCRAM-SHA-256). With none, logins need no password,
    /// which is only allowed on a loopback address.
    #[serde(default)]
    pub users: Vec<PgUser>,
    /// PEM certificate chain and PKCS#8 key: with both, clients may use TLS.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            enabled: default_enabled(),
            listen: default_listen(),
            users: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

fn default_enabled() -> bool {
    true
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5433))
}

/// A user of the wire server. The password is given in the file or, better, named by
/// an environment variable.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PgUser {
    pub name: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
}

impl fmt::Debug for PgUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgUser")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_env", &self.password_env)
            .finish()
    }
}

impl PgConfig {
    /// Checks the settings and resolves passwords; the errors say what to fix.
    pub fn users(&self) -> Result<Vec<(String, String)>, PgError> {
        if self.users.is_empty() && !self.listen.ip().is_loopback() {
            return Err(PgError::Config(format!(
                "postgres.listen is {} (not loopback) but no postgres.users are configured: \
                 refusing to serve SQL without passwords beyond this machine",
                self.listen
            )));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(PgError::Config(
                "postgres.tls-cert and postgres.tls-key go together".into(),
            ));
        }
        self.users
            .iter()
            .map(|u| {
                let password = match (&u.password, &u.password_env) {
                    (Some(p), None) => p.clone(),
                    (None, Some(var)) => std::env::var(var).map_err(|_| {
                        PgError::Config(format!(
                            "postgres user {:?}: environment variable {var} is not set",
                            u.name
                        ))
                    })?,
                    _ => {
                        return Err(PgError::Config(format!(
                            "postgres user {:?}: give exactly one of password and password-env",
                            u.name
                        )));
                    }
                };
                if password.is_empty() {
                    return Err(PgError::Config(format!(
                        "postgres user {:?}: empty password",
                        u.name
                    )));
                }
                Ok((u.name.clone(), password))
            })
            .collect()
    }
}

/// Salted SCRAM verifiers of the configured users; the passwords themselves are not
/// kept.
struct Users {
    known: HashMap<String, (Vec<u8>, Vec<u8>)>,
    /// Random per start: unknown users' salts derive from it.
    secret: [u8; 32],
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.known.keys()).finish()
    }
}

impl Users {
    fn new(users: &[(String, String)]) -> Self {
        let mut secret = [0u8; 32];
        for chunk in secret.chunks_mut(18) {
            let nonce = random_nonce();
            let n = chunk.len();
            chunk.copy_from_slice(&Sha256::digest(nonce.as_bytes())[..n]);
        }
        Users {
            known: users
                .iter()
                .map(|(name, password)| {
                    let salt = random_nonce().into_bytes();
                    let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
                    (name.clone(), (salt, salted))
                })
                .collect(),
            secret,
        }
    }

    /// An unknown user's salt: the same on every attempt, and shaped like a known
    /// user's, so that the salt says nothing about whether the user exists.
    fn unknown_salt(&self, user: &str) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(user.as_bytes());
        let digest = h.finalize();
        base64::engine::general_purpose::STANDARD
            .encode(&digest[..18])
            .into_bytes()
    }
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        if let Some((salt, salted)) = self.known.get(user) {
            return Ok(Password::new(Some(salt.clone()), salted.clone()));
        }
        // An unknown user goes through the same exchange with a verifier nobody can
        // match, so a client cannot tell unknown users from wrong passwords.
        let salt = self.unknown_salt(user);
        let salted = gen_salted_password(&random_nonce(), &salt, SCRAM_ITERATIONS);
        Ok(Password::new(Some(salt), salted))
    }
}

/// Logins without a password (loopback only).
struct Open {
    connections: Arc<ConnectionManager>,
}

impl NoopStartupHandler for Open {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

enum Startup {
    Open(Open),
    Scram(SASLAuthStartupHandler<DefaultServerParameterProvider>),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Open(h) => h.on_startup(client, message).await,
            Startup::Scram(h) => h.on_startup(client, message).await,
        }
    }
}

/// Rejects statements that change state before they are planned, and counts
/// statements.
struct ReadOnlyGuard {
    metrics: SqlMetrics,
}

impl ReadOnlyGuard {
    /// `None` lets the statement run; otherwise the answer it gets instead.
    fn check(&self, statement: &Statement) -> Option<PgWireResult<Response>> {
        match check_read_only(statement) {
            Ok(()) => {
                self.metrics.record("postgres", "executed");
                // A setting that restates what is served is answered here, so that it
                // never reaches the engine's shared settings.
                fixed_setting(statement).then(|| Ok(Response::Execution(Tag::new("SET"))))
            }
            Err(e) => {
                self.metrics.record("postgres", "rejected");
                Some(Err(read_only_error(e)))
            }
        }
    }
}

fn read_only_error(e: SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        // read_only_sql_transaction
        "25006".into(),
        e.to_string(),
    )))
}

#[async_trait]
impl QueryHook for ReadOnlyGuard {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.check(statement)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        // Counted when executed, not when parsed.
        check_read_only(statement)
            .err()
            .map(|e| Err(read_only_error(e)))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.check(statement)
    }
}

/// Grafana's query builder lists tables with a query that resolves the session's
/// `search_path` (`current_setting`, array subscripts, `generate_series`). driftwatch
/// has one schema, so that query is answered with the tables of `public`.
struct GrafanaTables;

const GRAFANA_TABLES_SQL: &str = "SELECT table_name AS \"table\" FROM information_schema.tables \
     WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1";

fn is_grafana_tables(statement: &Statement) -> bool {
    let text = statement.to_string().to_lowercase();
    text.contains("information_schema.tables") && text.contains("timescaledb_information")
}

fn api_error(e: datafusion::error::DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(e))
}

#[async_trait]
impl QueryHook for GrafanaTables {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !is_grafana_tables(statement) {
            return None;
        }
        let answer = async {
            let df = ctx.sql(GRAFANA_TABLES_SQL).await.map_err(api_error)?;
            let encoded = datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe(
                df,
                &datafusion_postgres::pgwire::api::portal::Format::UnifiedText,
                None,
            )
            .await?;
            Ok(Response::Query(encoded))
        };
        Some(answer.await)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if !is_grafana_tables(statement) {
            return None;
        }
        Some(
            ctx.state()
                .create_logical_plan(GRAFANA_TABLES_SQL)
                .await
                .map_err(api_error),
        )
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

/// Counts failed statements and logs them at debug level (they are the client's).
struct Errors {
    metrics: SqlMetrics,
}

impl ErrorHandler for Errors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        self.metrics.record("postgres", "error");
        debug!(error = %error, "SQL error sent to a PostgreSQL client.");
    }
}

struct Handlers {
    session: Arc<DfSessionService>,
    users: Option<Arc<Users>>,
    connections: Arc<ConnectionManager>,
    metrics: SqlMetrics,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.session.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        // SASL keeps per-connection state: one handler per connection.
        Arc::new(match &self.users {
            None => Startup::Open(Open {
                connections: self.connections.clone(),
            }),
            Some(users) => Startup::Scram(
                SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                    .with_scram(ScramAuth::new(users.clone()))
                    .with_connection_manager(self.connections.clone()),
            ),
        })
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(Errors {
            metrics: self.metrics.clone(),
        })
    }

    fn cancel_handler(&self) -> Arc<impl datafusion_postgres::pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.connections.clone()))
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, PgError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            PgError::Tls(format!(
                "cannot read the certificate {}: {e}",
                cert.display()
            ))
        })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        PgError::Tls(format!(
            "cannot read the private key {}: {e}",
            key.display()
        ))
    })?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| PgError::Tls(format!("the certificate and key do not fit together: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A bound wire server, ready to serve.
pub struct PgServer {
    listener: TcpListener,
    handlers: Arc<Handlers>,
    tls: Option<TlsAcceptor>,
}

impl PgServer {
    /// Checks the settings, prepares the catalog and binds the port (so a taken port
    /// fails at start). Call from within the engine's runtime.
    pub async fn bind(
        config: &PgConfig,
        engine: &SqlEngine,
        metrics: SqlMetrics,
    ) -> Result<PgServer, PgError> {
        let users = config.users()?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let ctx = engine.wire_context();
        setup_pg_catalog(&ctx, "datafusion", Arc::new(AuthManager::default()))
            .map_err(|e| PgError::Catalog(e.to_string()))?;
        // pg_catalog brings functions of its own: they are bounded like the rest.
        bound_functions(&ctx, engine.limits().caps());
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(ReadOnlyGuard {
                metrics: metrics.clone(),
            }),
            Arc::new(GrafanaTables),
        ];
        let session = Arc::new(DfSessionService::new_with_hooks(
            ctx,
            hooks.into_iter().chain(default_hooks()).collect(),
        ));
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| PgError::Listen {
                    addr: config.listen,
                    source,
                })?;
        Ok(PgServer {
            listener,
            handlers: Arc::new(Handlers {
                session,
                users: (!users.is_empty()).then(|| Arc::new(Users::new(&users))),
                connections: Arc::new(ConnectionManager::new()),
                metrics,
            }),
            tls,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves connections until cancelled.
    pub async fn serve(self, cancel: CancellationToken) {
        info!(
            listen = %self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            tls = self.tls.is_some(),
            passwords = self.handlers.users.is_some(),
            "PostgreSQL wire server ready."
        );
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((socket, peer)) => {
                    let handlers = self.handlers.clone();
                    let tls = self.tls.clone();
                    tokio::spawn(async move {
                        if let Err(e) = process_socket(socket, tls, handlers).await {
                            debug!(%peer, error = %e, "PostgreSQL connection ended with an error.");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "Accepting a PostgreSQL connection failed.");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// datafusion-postgres's own hooks: cursors, `SET`/`SHOW`, transactions.
fn default_hooks() -> Vec<Arc<dyn QueryHook>> {
    use datafusion_postgres::hooks::cursor::CursorStatementHook;
    use datafusion_postgres::hooks::set_show::SetShowHook;
    use datafusion_postgres::hooks::transactions::TransactionStatementHook;
    vec![
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A known user's salt is fixed for the server's life; an unknown user's must be
    /// too, and look the same, or a client learns which users exist by asking twice.
    #[test]
    fn an_unknown_users_salt_is_as_stable_as_a_known_users() {
        let users = Users::new(&[("analyst".to_owned(), "pw".to_owned())]);
        let known = &users.known["analyst"].0;
        let a = users.unknown_salt("nobody");
        assert_eq!(a, users.unknown_salt("nobody"));
        assert_ne!(a, users.unknown_salt("somebody"));
        assert_eq!(a.len(), known.len());
        // Another start, another secret: nothing to correlate across restarts.
        let again = Users::new(&[("analyst".to_owned(), "pw".to_owned())]);
        assert_ne!(a, again.unknown_salt("nobody"));
    }
}
