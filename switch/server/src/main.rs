//! `switchboard`: the softswitch binary.
//!
//! - `switchboard [--conf DIR]` runs the switch (default `conf/`);
//! - `switchboard check` validates the configuration and exits non-zero with diagnostics;
//! - `switchboard route --to N ...` prints the dialplan's decision trace without a call;
//! - `switchboard ctl calls|hangup ID|reload|gateways|gateway NAME up|down` talks to the
//!   admin API of a running switch.

mod config;
mod conn;
mod console;
mod ctl;
mod http;
mod media;
mod media_sock;
mod modules;
mod observe;
mod shell;
mod tls;
mod udp;
/// Call records and context: the store crate, under the name the shell has always used.
pub(crate) use switchboard_store as storage;
mod web;

use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard_core::{Engine, facts_of};
use switchboard_sip::transaction::{Peer, Transport};
use switchboard_sip::{Method, Name, Request};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "switchboard",
    version,
    about = "A SIP softswitch (B2BUA) driven by a declarative dialplan"
)]
struct Cli {
    /// Configuration directory (holds switchboard.toml and dialplan/).
    #[arg(long, global = true, default_value = "conf")]
    conf: PathBuf,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the switch (the default).
    Run,
    /// Validate the configuration; exit 1 with file:line:col diagnostics on error.
    Check,
    /// Dry-run the dialplan for a call and print every decision.
    Route {
        /// Destination (Request-URI user).
        #[arg(long)]
        to: String,
        /// Caller number.
        #[arg(long, default_value = "anonymous")]
        from: String,
        /// Caller display name.
        #[arg(long, default_value = "")]
        name: String,
        /// A header of the incoming INVITE, `Name=value` (repeatable).
        #[arg(long = "header", value_parser = kv)]
        headers: Vec<(String, String)>,
        /// A call variable, `name=value` (repeatable).
        #[arg(long = "var", value_parser = kv)]
        vars: Vec<(String, String)>,
        /// When the call arrives: RFC 3339 (`2026-11-27T15:00:00Z`) or zoned
        /// (`2026-11-27T10:00[America/New_York]`); default now.
        #[arg(long)]
        at: Option<String>,
        /// Context (default: sip.context).
        #[arg(long)]
        context: Option<String>,
    },
    /// Control a running switch through its admin API.
    Ctl {
        #[command(subcommand)]
        what: CtlCmd,
    },
    /// Make a merchant CRM API key: prints the key (give it to the CRM) and the line for
    /// `[merchant.ID] api_keys` (only the hash is stored).
    Apikey,
    /// Mint a call token for a button (what a merchant's server does; for tests and demos).
    Token {
        /// The merchant's secret.
        #[arg(long)]
        secret: String,
        /// Merchant ID.
        #[arg(long)]
        merchant: String,
        /// Link ID.
        #[arg(long)]
        link: String,
        /// Session ID.
        #[arg(long, default_value = "")]
        session: String,
        /// Valid for this many seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Call records (read from the database; the switch may be running).
    Cdr {
        #[command(subcommand)]
        what: CdrCmd,
    },
    /// The agent console's accounts (in the call store; the switch may be running).
    Agent {
        #[command(subcommand)]
        what: AgentCmd,
    },
}

#[derive(Subcommand, Debug)]
enum AgentCmd {
    /// Add an agent (asks for the password, or reads one line from stdin).
    Add {
        /// Login ID.
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// A merchant whose calls they take (repeatable).
        #[arg(long = "merchant")]
        merchants: Vec<String>,
        /// A queue they answer (repeatable).
        #[arg(long = "queue")]
        queues: Vec<String>,
        /// agent, supervisor or admin.
        #[arg(long, default_value = "agent")]
        role: String,
    },
    /// Set an agent's password (asks, or reads one line from stdin); their sessions end.
    Passwd {
        /// Login ID.
        id: String,
    },
    /// Remove an agent.
    Remove {
        /// Login ID.
        id: String,
    },
    /// List the agents (conf/ and the store).
    List,
    /// Print an argon2id hash of a password for an `[agent.ID] password` in conf/.
    Hash,
}

#[derive(Subcommand, Debug)]
enum CdrCmd {
    /// Print records, newest first: CSV (default) or JSON.
    Export {
        /// Calls started at or after: RFC 3339 or a date (UTC).
        #[arg(long)]
        since: Option<String>,
        /// Calls started before.
        #[arg(long)]
        until: Option<String>,
        /// Only this hang-up cause (e.g. USER_BUSY, INTERRUPTED).
        #[arg(long)]
        cause: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100_000)]
        limit: u32,
        /// csv or json.
        #[arg(long, default_value = "csv")]
        format: String,
    },
}

#[derive(Subcommand, Debug)]
enum CtlCmd {
    /// List calls in progress.
    Calls,
    /// Hang up a call by id.
    Hangup {
        /// Call id from `ctl calls`.
        id: u64,
    },
    /// Reload dialplan and gateways (refused, old config kept, when it has errors).
    Reload,
    /// List gateways and their state.
    Gateways,
    /// Mark a gateway up or down.
    Gateway {
        /// Gateway name.
        name: String,
        /// `up` or `down`.
        state: String,
    },
    /// List the banned sources ([limits]): address, reason, seconds left.
    Bans,
    /// Lift a source's ban.
    Unban {
        /// The banned IP address.
        ip: std::net::IpAddr,
    },
}

/// mimalloc: a call allocates ~20 KB of short-lived set-up state between its long-lived
/// pieces; glibc's malloc kept that fragmented (11.2 KB resident per established call at 10k
/// calls, 8.9 KB with mimalloc; docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

fn main() -> ExitCode {
    // mimalloc asks for transparent huge pages on its arenas (madvise); each first touch of
    // one then zeroes 2 MiB. Under a ramp of calls that was 13 % of the SIP thread's samples
    // (page clearing), and 5-9 % of the CPU per call and 11 % of the memory at 3,000 calls/s
    // (docs/BENCHMARKS.md, issue 16). Off for the whole process, before any thread starts.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::parse();
    let result = match cli.cmd.unwrap_or(Cmd::Run) {
        Cmd::Run => run(cli.conf),
        Cmd::Check => check(&cli.conf),
        Cmd::Route {
            to,
            from,
            name,
            headers,
            vars,
            at,
            context,
        } => route(
            &cli.conf,
            &to,
            &from,
            &name,
            &headers,
            &vars,
            at.as_deref(),
            context,
        ),
        Cmd::Ctl { what } => ctl(&cli.conf, what),
        Cmd::Cdr { what } => cdr(&cli.conf, what),
        Cmd::Agent { what } => agent(&cli.conf, what),
        Cmd::Apikey => apikey(),
        Cmd::Token {
            secret,
            merchant,
            link,
            session,
            ttl,
        } => {
            let exp = jiff::Timestamp::now().as_second().max(0) as u64 + ttl;
            println!(
                "{}",
                switchboard_webrtc::token::mint(secret.as_bytes(), &merchant, &link, &session, exp)
            );
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A password from the terminal (not echoed, asked twice) or one line of stdin.
fn read_password(prompt: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let stty = |arg: &str| {
        let _ = std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status();
    };
    let ask = |words: &str| -> anyhow::Result<String> {
        if tty {
            eprint!("{words}");
            let _ = std::io::stderr().flush();
            stty("-echo");
        }
        let mut line = String::new();
        let read = stdin.lock().read_line(&mut line);
        if tty {
            stty("echo");
            eprintln!();
        }
        read?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    };
    let first = ask(prompt)?;
    if tty && ask("again: ")? != first {
        anyhow::bail!("the two passwords differ");
    }
    if first.is_empty() {
        anyhow::bail!("no password given");
    }
    Ok(first)
}

fn agent(conf: &std::path::Path, what: AgentCmd) -> anyhow::Result<ExitCode> {
    if let AgentCmd::Hash = what {
        let p = read_password("password: ")?;
        println!("{}", switchboard_agent::password::hash(&p)?);
        return Ok(ExitCode::SUCCESS);
    }
    let l = match load_or_report(conf) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let db = &l.storage;
    let now = jiff::Timestamp::now().as_millisecond();
    let in_conf = |id: &str| l.agents.accounts.contains_key(id);
    match what {
        AgentCmd::Add {
            id,
            name,
            merchants,
            queues,
            role,
        } => {
            if in_conf(&id) {
                anyhow::bail!("agent {id} is defined in conf/ ([agent.{id}])");
            }
            if storage::agent_get(db, &id)?.is_some() {
                anyhow::bail!(
                    "agent {id} exists: `switchboard agent passwd {id}` changes the password"
                );
            }
            for q in &queues {
                if !l.agents.queues.contains_key(q) {
                    eprintln!("note: no [queue.{q}] in switchboard.toml yet");
                }
            }
            let password = Some(read_password(&format!("password for {id}: "))?);
            let change = console::AgentChange {
                name,
                role: Some(role),
                merchants: Some(merchants),
                queues: Some(queues),
                password,
            };
            let row = console::apply_change(&id, None, change).map_err(|e| anyhow::anyhow!(e))?;
            storage::agent_put(db, &row, now)?;
            println!("agent {id} added");
        }
        AgentCmd::Passwd { id } => {
            let Some(old) = storage::agent_get(db, &id)? else {
                anyhow::bail!(
                    "no agent {id} in the store{}",
                    if in_conf(&id) {
                        " (it is defined in conf/: set its hash there, `switchboard agent hash`)"
                    } else {
                        ""
                    }
                );
            };
            let password = Some(read_password(&format!("new password for {id}: "))?);
            let row = console::apply_change(
                &id,
                Some(old),
                console::AgentChange {
                    password,
                    ..Default::default()
                },
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            storage::agent_put(db, &row, now)?;
            println!(
                "password of {id} changed (consoles already logged in stay until they log out or idle out; the admin API ends them at once)"
            );
        }
        AgentCmd::Remove { id } => {
            if !storage::agent_remove(db, &id)? {
                anyhow::bail!("no agent {id} in the store");
            }
            println!("agent {id} removed (a running switch ends their sessions within 15 s)");
        }
        AgentCmd::List => {
            for (a, _) in l.agents.accounts.values() {
                println!(
                    "{}\t{}\t{}\tmerchants={}\tqueues={}\t(conf)",
                    a.id,
                    a.name,
                    a.role.as_str(),
                    a.merchants.join(","),
                    a.queues.join(",")
                );
            }
            for r in storage::agent_list(db)? {
                println!(
                    "{}\t{}\t{}\tmerchants={}\tqueues={}",
                    r.id,
                    r.name,
                    r.role,
                    r.merchants.join(","),
                    r.queues.join(",")
                );
            }
        }
        AgentCmd::Hash => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn load_or_report(conf: &std::path::Path) -> Result<config::Loaded, ExitCode> {
    config::load(conf).map_err(|d| {
        eprintln!("{d}");
        eprintln!(
            "switchboard: configuration refused ({} error(s))",
            d.0.len()
        );
        ExitCode::FAILURE
    })
}

fn check(conf: &std::path::Path) -> anyhow::Result<ExitCode> {
    let l = match load_or_report(conf) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    println!(
        "configuration OK: {} file(s), {} extension(s), {} gateway(s)",
        l.files.len(),
        l.dialplan.len(),
        l.gateways.iter().count()
    );
    for w in &l.warnings {
        println!("warning: {w}");
    }
    for (id, (_, hash)) in &l.agents.accounts {
        if switchboard_agent::password::verify(config::DEMO_PASSWORD, Some(hash)) {
            println!(
                "note: agent {id} has the README's demo password: accepted on loopback only (set your own with `switchboard agent hash`)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
fn route(
    conf: &std::path::Path,
    to: &str,
    from: &str,
    name: &str,
    headers: &[(String, String)],
    vars: &[(String, String)],
    at: Option<&str>,
    context: Option<String>,
) -> anyhow::Result<ExitCode> {
    let l = match load_or_report(conf) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let wall = match at {
        None => jiff::Timestamp::now(),
        Some(s) => s
            .parse::<jiff::Timestamp>()
            .or_else(|_| s.parse::<jiff::ZonedDateTime>().map(|z| z.timestamp()))
            .with_context(|| {
                format!(
                    "--at {s:?}: use 2026-11-27T15:00:00Z or 2026-11-27T10:00[America/New_York]"
                )
            })?,
    };
    // The same path as a live call: a synthetic INVITE through the same facts builder.
    let mut req = Request::new(Method::Invite, format!("sip:{to}@dry-run.invalid"));
    let display = if name.is_empty() {
        String::new()
    } else {
        format!("\"{name}\" ")
    };
    req.headers.push(
        Name::From,
        format!("{display}<sip:{from}@dry-run.invalid>;tag=dry"),
    );
    req.headers
        .push(Name::To, format!("<sip:{to}@dry-run.invalid>"));
    req.headers.push(Name::CallId, "dry-run");
    for (k, v) in headers {
        req.headers
            .push(Name::from_str_lossless(&k.as_str().into()), v.clone());
    }
    let ctx = context.unwrap_or_else(|| l.engine.context.clone());
    let peer = Peer {
        transport: Transport::Udp,
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let mut facts = facts_of(&req, &ctx, peer, wall);
    facts.vars.extend(vars.iter().cloned());
    let plan = l.dialplan.evaluate(&facts);
    println!("call: to={to:?} from={from:?} context={ctx:?} at={wall}");
    for line in &plan.trace {
        println!("{line}");
    }
    println!("plan:");
    if plan.actions.is_empty() {
        println!("  (nothing) -> 404 NO_ROUTE_DESTINATION");
    }
    for a in &plan.actions {
        println!("  {a:?}");
    }
    let down: Vec<_> = l
        .gateways
        .iter()
        .filter(|g| g.config.ping.unwrap_or(0) > 0)
        .map(|g| g.name.clone())
        .collect();
    if !down.is_empty() {
        println!(
            "note: gateway health ({}) is live state; `switchboard ctl gateways` shows it",
            down.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn ctl(conf: &std::path::Path, what: CtlCmd) -> anyhow::Result<ExitCode> {
    let l = match load_or_report(conf) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let addr = l
        .http
        .context("http.listen is not set: the admin API is off")?;
    let token = l.token.as_deref();
    let (method, path) = match &what {
        CtlCmd::Calls => ("GET", "/api/v1/calls".to_owned()),
        CtlCmd::Hangup { id } => ("POST", format!("/api/v1/calls/{id}/hangup")),
        CtlCmd::Reload => ("POST", "/api/v1/reload".to_owned()),
        CtlCmd::Gateways => ("GET", "/api/v1/gateways".to_owned()),
        CtlCmd::Gateway { name, state } => ("POST", format!("/api/v1/gateways/{name}/{state}")),
        CtlCmd::Bans => ("GET", "/api/v1/bans".to_owned()),
        CtlCmd::Unban { ip } => ("DELETE", format!("/api/v1/bans/{ip}")),
    };
    let (status, body) = ctl::request(addr, token, method, &path)?;
    print!("{body}");
    if !body.ends_with('\n') {
        println!();
    }
    Ok(if (200..300).contains(&status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn cdr(conf: &std::path::Path, what: CdrCmd) -> anyhow::Result<ExitCode> {
    let l = match load_or_report(conf) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let CdrCmd::Export {
        since,
        until,
        cause,
        limit,
        format,
    } = what;
    let time = |v: Option<String>| {
        v.map(|s| storage::parse_time(&s))
            .transpose()
            .map_err(anyhow::Error::msg)
    };
    let filter = storage::CdrFilter {
        since_ms: time(since)?,
        until_ms: time(until)?,
        cause,
        limit: Some(limit),
        ..Default::default()
    };
    let rows = storage::query(&l.storage, &filter)?;
    match format.as_str() {
        "csv" => print!("{}", storage::to_csv(&rows)),
        "json" => println!("{}", serde_json::to_string_pretty(&rows)?),
        other => anyhow::bail!("--format {other:?}: csv or json"),
    }
    Ok(ExitCode::SUCCESS)
}

fn apikey() -> anyhow::Result<ExitCode> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let key: String = std::iter::once("sbk_".to_owned())
        .chain(b.iter().map(|x| format!("{x:02x}")))
        .collect();
    println!("key (give it to the CRM; it is not stored): {key}");
    println!(
        "for switchboard.toml, [merchant.ID]: api_keys = [\"{}\"]",
        switchboard_webrtc::token::key_hash(&key)
    );
    Ok(ExitCode::SUCCESS)
}

fn seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Media events (digits, timeouts, prompts done) waiting for the SIP thread; a media session
/// waits when it is full.
const MEDIA_EVENTS: usize = 4096;

/// Raises the soft limit of open files to the hard one: every anchored call holds four UDP
/// sockets, every TCP connection one, and the HTTP side needs its share.
fn raise_open_files() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < 4096 => warn!(
            limit = n,
            "the open-files limit is low: calls, TCP connections and HTTP share it (raise LimitNOFILE)"
        ),
        Ok(n) => info!(limit = n, "open-files limit"),
        Err(e) => warn!(error = %e, "cannot read or raise the open-files limit"),
    }
}

fn run(conf: PathBuf) -> anyhow::Result<ExitCode> {
    let l = match load_or_report(&conf) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&l.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
    raise_open_files();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (net_tx, net_rx) = mpsc::channel(4096);
        let (udp, tcp, tls_addr) = (l.engine.udp, l.engine.tcp, l.engine.tls);
        let tls_clients = l.tls_clients.clone();
        let gates = Arc::new(conn::Gates::new(l.sip_conn, l.http_conn));
        // Certificates, loaded once here (checked at load too) and again at each reload.
        const ALPN_HTTP: &[&[u8]] = &[b"http/1.1"];
        let load_tls = |f: &Option<tls::TlsFiles>, alpn: &'static [&'static [u8]]| {
            f.clone().map(|f| tls::Tls::load(f, alpn)).transpose().map_err(anyhow::Error::msg)
        };
        let tlss = Arc::new(shell::TlsSet {
            sip: load_tls(&l.tls[0], &[])?,
            http: load_tls(&l.tls[1], ALPN_HTTP)?,
            widget: load_tls(&l.tls[2], ALPN_HTTP)?,
        });
        for w in &l.warnings {
            warn!("{w}");
        }
        let media_ip = l.engine.media_ip;
        let modules_loaded = l.modules.clone();
        let merchants = Arc::new(modules::WebMerchants::default());
        let pages = modules::pages(l.web.iter().flat_map(|w| w.merchants.values()));
        let desk = switchboard_agent::Desk::shared(l.agents.queues.clone(), None);
        let mut registry =
            modules::build(&l.modules, l.gateways, pages, Some(merchants.clone()), desk.clone());
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let (sqlite, resting) = storage::SqliteStore::open_with(&l.storage, now_ms, l.retention)
            .map_err(|e| anyhow::anyhow!("call records: {e} (set [storage] path in switchboard.toml)"))?;
        let storage: storage::Store = Arc::new(sqlite);
        let taps = media::Taps::default();
        // Pool numbers released (or reclaimed) recently rest out their cool-down.
        let now = std::time::Instant::now();
        if let Some(trunk) = registry.get_mut::<switchboard_trunk::Trunk>() {
            for (gateway, number, released_ms) in resting {
                let cooldown = trunk
                    .gateways()
                    .get(&gateway)
                    .and_then(|g| g.ani.as_ref())
                    .map_or(0, |p| p.cooldown.as_millis() as i64);
                let left = released_ms + cooldown - now_ms;
                if left > 0 {
                    trunk.ani_rest_until(&gateway, &number, now + std::time::Duration::from_millis(left as u64));
                }
            }
        }
        let mut observers: Vec<Box<dyn switchboard_core::module::CallObserver>> = registry.take_observers();
        let engine = Engine::new(l.engine, Arc::new(l.dialplan), registry, seed());
        let web = l.web.map(|w| web::WebShared::new(w, net_tx.clone(), engine.port_pool(), Some(storage.clone()), taps.clone()));
        // The agent console needs the browser leg (its media) and the agent module (its desk).
        let hub = web.as_ref().filter(|_| l.modules.iter().any(|m| m == "agent")).map(|w| {
            let hub = console::ConsoleHub::start(w.clone(), desk.clone(), l.agents.clone(), l.storage.clone(), cmd_tx.clone());
            let _ = w.hub.set(hub.clone());
            hub
        });
        if let Some(addr) = l.http {
            let tx = cmd_tx.clone();
            let token = (l.token.clone(), l.metrics_token.clone(), l.metrics_open.clone());
            let db = storage.clone();
            let listener_check = std::net::TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("cannot bind HTTP {addr}: {e}"))?;
            drop(listener_check);
            let web = web.clone();
            let hub = hub.clone();
            let gate = gates.http.clone();
            let tls = tlss.http.clone();
            tokio::spawn(async move {
                if let Err(e) = http::serve(addr, (gate, tls), tx, token, db, web, hub).await {
                    error!("HTTP server stopped: {e:#}");
                }
            });
        }
        if let Some(w) = &web
            && let Some(addr) = w.listen()
        {
            // Bound now: a taken port is a start-up error, not a log line later.
            drop(std::net::TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("cannot bind the widget's HTTP {addr}: {e}"))?);
            let w = w.clone();
            let hub = hub.clone();
            let gate = gates.widget.clone();
            let tls = tlss.widget.clone();
            tokio::spawn(async move {
                if let Err(e) = web::serve(addr, (gate, tls), w, hub).await {
                    error!("widget HTTP server stopped: {e:#}");
                }
            });
        }
        tokio::spawn(signals(cmd_tx.clone()));
        info!(conf = %conf.display(), modules = %modules_loaded.join(","), web = web.is_some(), "switchboard starting");
        let (media_tx, media_rx) = mpsc::channel(MEDIA_EVENTS);
        let mut media = media::MediaHub::new(
            media_ip,
            media::media_workers(std::thread::available_parallelism().map_or(1, usize::from))?,
            media_tx,
            l.prompts,
            l.rtp_timeout,
        );
        media.opus_complexity = l.opus_complexity;
        media.latching = l.rtp_latching;
        // The engine binds each call's RTP pairs as it takes them (a pair that cannot be bound
        // is never offered); the hub claims the sockets.
        let pool = engine.port_pool();
        pool.bind_on(media_ip);
        media.pool = Some(pool);
        media.storage = Some(storage.clone());
        media.taps = taps;
        let digits = Arc::new(observe::DigitCounts::default());
        if let Some(w) = &web {
            let _ = merchants.0.set(w.clone());
        }
        observers.insert(0, Box::new(observe::Records(storage.clone())));
        observers.insert(1, Box::new(observe::DigitMetrics(digits.clone())));
        let shell = shell::Shell {
            udp,
            tcp,
            engine,
            conf,
            drain: l.drain,
            modules: modules_loaded,
            media,
            digits,
            web,
            observers: observe::Observers::start(observers, observe::QUEUE),
            replies: Default::default(),
            next_token: 1,
            gates,
            tls: tlss,
            tls_addr,
            tls_clients,
        };
        // SIP runs on a thread of its own with a single-threaded runtime: every datagram is
        // handled where it was received, with no cross-thread wake-up. HTTP and the RTP relays
        // stay on the multi-threaded runtime.
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new().name("sip".into()).spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(shell.run(cmd_rx, media_rx, (net_tx, net_rx))));
            let _ = done_tx.send(result);
        })?;
        done_rx.await.map_err(|_| anyhow::anyhow!("the SIP thread stopped unexpectedly"))?
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
async fn signals(cmd: mpsc::Sender<shell::Command>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { let _ = cmd.send(shell::Command::Shutdown).await; }
            _ = int.recv() => { let _ = cmd.send(shell::Command::Shutdown).await; }
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = cmd.send(shell::Command::Reload(tx)).await;
                let _ = rx.await;
            }
        }
    }
}

#[cfg(not(unix))]
async fn signals(cmd: mpsc::Sender<shell::Command>) {
    let _ = tokio::signal::ctrl_c().await;
    let _ = cmd.send(shell::Command::Shutdown).await;
}
