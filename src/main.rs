//! The command line (CONTRACT §1): `run` (default), `check`, `token`,
//! `demo`, and the hidden `colorizer` that runs the stand-in alone (tests,
//! benchmarks).

use clap::{Args, Parser, Subcommand};
use colorgate::{config, demo, gateway, reload, server};
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "colorgate",
    version,
    about = "An API gateway for GPU-bound model APIs, built on Pingora"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunOpts,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve with a config file (the default command).
    Run(RunOpts),
    /// Parse and fully validate a config file.
    Check {
        #[arg(short = 'c', long = "conf")]
        conf: PathBuf,
    },
    /// Mint or verify tokens with the configured keys.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Start the gateway and a stand-in colorizer on 127.0.0.1, with a ready token.
    Demo {
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Port of the stand-in colorizer (the DeOldify API's own).
        #[arg(long, default_value_t = 7860)]
        colorizer_port: u16,
        /// Port of the admin listener (`/metrics`).
        #[arg(long, default_value_t = 9180)]
        admin_port: u16,
    },
    /// Run only the stand-in colorizer (for tests and benchmarks).
    #[command(hide = true)]
    Colorizer {
        #[arg(long, default_value = "127.0.0.1:7860")]
        listen: String,
    },
}

#[derive(Args, Default)]
struct RunOpts {
    /// The config file.
    #[arg(short = 'c', long = "conf")]
    conf: Option<PathBuf>,
    /// Run in the background.
    #[arg(short = 'd', long)]
    daemon: bool,
    /// Take the listening sockets over from a running instance.
    #[arg(short = 'u', long)]
    upgrade: bool,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Mint a token; prints it alone on stdout.
    Issue {
        #[arg(short = 'c', long = "conf")]
        conf: PathBuf,
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Extra claims, k=v (repeatable).
        #[arg(long = "claim")]
        claims: Vec<String>,
    },
    /// Print the verified claims as JSON, or why the token is rejected.
    Verify {
        #[arg(short = 'c', long = "conf")]
        conf: PathBuf,
        token: String,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,colorgate=info"),
    )
    .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        None => run(cli.run),
        Some(Cmd::Run(opts)) => run(opts),
        Some(Cmd::Check { conf }) => check(&conf),
        Some(Cmd::Token(t)) => token(t),
        Some(Cmd::Demo {
            port,
            colorizer_port,
            admin_port,
        }) => demo::run(demo::Ports {
            gateway: port,
            colorizer: colorizer_port,
            admin: admin_port,
        }),
        Some(Cmd::Colorizer { listen }) => colorizer(&listen),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: RunOpts) -> Result<(), String> {
    let file = opts.conf.ok_or(
        "colorgate run: a config file is required (-c FILE); try `colorgate demo` for a first look",
    )?;
    let gw = config::load(&file, None).map_err(|e| e.to_string())?;
    let gateway = gateway::shared(gw);
    let reloader = reload::Reloader::new(file, gateway.clone());
    let mode = server::StartMode {
        upgrade: opts.upgrade,
        daemon: opts.daemon,
    };
    server::run(gateway, Some(reloader), mode, Vec::new())
}

fn check(file: &std::path::Path) -> Result<(), String> {
    config::load(file, None).map_err(|e| e.to_string())?;
    println!("configuration OK");
    Ok(())
}

fn token(cmd: TokenCmd) -> Result<(), String> {
    match cmd {
        TokenCmd::Issue {
            conf,
            user,
            ttl,
            claims,
        } => {
            let gw = config::load(&conf, None).map_err(|e| e.to_string())?;
            let jwt = gw
                .jwt
                .as_ref()
                .ok_or_else(|| format!("{}: auth.jwt is not configured", conf.display()))?;
            let ttl = config::units::parse_duration(&ttl).map_err(|e| format!("--ttl: {e}"))?;
            let mut extra = Vec::with_capacity(claims.len());
            for c in &claims {
                let (k, v) = c
                    .split_once('=')
                    .ok_or_else(|| format!("--claim {c:?}: expected k=v"))?;
                extra.push((k.to_string(), v.to_string()));
            }
            println!("{}", jwt.issue(&user, ttl.as_secs(), &extra)?);
            Ok(())
        }
        TokenCmd::Verify { conf, token } => {
            let gw = config::load(&conf, None).map_err(|e| e.to_string())?;
            let jwt = gw
                .jwt
                .as_ref()
                .ok_or_else(|| format!("{}: auth.jwt is not configured", conf.display()))?;
            let claims = jwt
                .verified_claims_json(token.trim())
                .map_err(|why| format!("token rejected: {}", why.as_str()))?;
            println!("{claims}");
            Ok(())
        }
    }
}

fn colorizer(listen: &str) -> Result<(), String> {
    use pingora_core::server::Server;
    let mut s = Server::new(None).map_err(|e| e.to_string())?;
    s.bootstrap();
    s.add_service(demo::colorizer_service(listen));
    s.run_forever()
}
