//! `snapbackd`'s command line: run the service, format the pool, activate volumes at boot.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::backend::kernel::{self, KernelBackend};
use crate::backend::userspace::{UserspaceBackend, UserspaceOptions};
use crate::backend::{Backend, BackendError, BackendKind};
use crate::config::{self, Config, DEFAULT_CONFIG_PATH};
use crate::pool::{self, Pool};
use crate::service::{self, logging, Authorization};

/// snapback daemon: copy-on-write snapshots of your volumes, rolled back by merging.
///
/// Without a subcommand, serves the D-Bus API (org.snapback.Snapback1 on the system bus)
/// until SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "snapbackd", version)]
pub struct Cli {
    /// Configuration file (pool and volumes).
    #[arg(long, global = true, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    /// Data path to use; default: kernel when /dev/mapper/control and the dm-snapshot
    /// targets are available, else userspace.
    #[arg(long, value_enum)]
    pub backend: Option<BackendChoice>,

    /// Let every caller mutate without asking polkit. Only for tests that are not about
    /// polkit: refused unless SNAPBACK_TESTING=1 is set.
    #[arg(long)]
    pub no_polkit: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Format the pool named in the configuration (empties its registry and COW space).
    Init {
        /// Overwrite a device that holds data (a filesystem signature or a non-zero first MiB).
        #[arg(long)]
        force: bool,
    },
    /// Assemble every volume's device-mapper stack before filesystems are mounted, starting
    /// pending rollbacks; then exit (kernel backend; run by snapback-activate.service).
    Activate {
        /// Wait this long for the pool and the volumes' devices to appear (a disk still being
        /// probed at boot) before giving up without assembling anything.
        #[arg(long, value_name = "SECONDS", default_value_t = 90)]
        device_timeout: u64,
        /// Where the kernel command line is read from (`snapback.rollback=N` starts set N's
        /// rollback before anything is mounted: the boot-menu entry of each set adds it).
        #[arg(long, value_name = "FILE", default_value = "/proc/cmdline")]
        cmdline: PathBuf,
    },
}

/// `--backend` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Kernel,
    Userspace,
}

/// Why a command failed; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Pool(#[from] pool::PoolError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("--no-polkit is only for tests: set SNAPBACK_TESTING=1 to use it")]
    NoPolkitRefused,
    #[error("the kernel backend is not available here: {0}")]
    KernelUnavailable(String),
    #[error(
        "no volume was assembled: devices named in the configuration did not appear within {seconds} s: \
         {missing}. Check that the disks are attached, or correct the paths in the configuration"
    )]
    DevicesMissing { seconds: u64, missing: String },
    #[error(transparent)]
    Service(#[from] service::ServiceError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Run what the command line asks for.
pub fn run(cli: Cli) -> Result<(), CliError> {
    logging::init();
    match cli.command {
        Some(Command::Init { force }) => init(&cli.config, force),
        Some(Command::Activate { device_timeout, ref cmdline }) => {
            activate(&cli.config, device_timeout, cmdline)
        }
        None => serve(&cli),
    }
}

fn init(config_path: &Path, force: bool) -> Result<(), CliError> {
    let config = config::load(config_path)?;
    let pool = pool::format(&config.pool.path, force)?;
    println!(
        "snapbackd: formatted pool {} ({} bytes of COW space)",
        config.pool.path.display(),
        pool.size_bytes()
    );
    // On the terminal (not to the journal, where logs go on a systemd machine): the
    // administrator running init is there now and can act on it.
    if let Some(note) = pool::sparse_file_note(&config.pool.path) {
        eprintln!("snapbackd: warning: {note}");
    }
    Ok(())
}

fn activate(config_path: &Path, device_timeout: u64, cmdline: &Path) -> Result<(), CliError> {
    let config = config::load(config_path)?;
    if let Err(why) = kernel_available() {
        return Err(CliError::KernelUnavailable(format!(
            "{why}; with the userspace backend, volumes are assembled when snapbackd starts"
        )));
    }
    kernel::boot_devices::wait_for(
        &kernel::boot_devices::configured(&config),
        Duration::from_secs(device_timeout),
    )
    .map_err(|missing| CliError::DevicesMissing {
        seconds: device_timeout,
        missing: kernel::boot_devices::describe(&missing),
    })?;
    let rollback = match std::fs::read_to_string(cmdline)
        .ok()
        .as_deref()
        .and_then(crate::boot::entries::requested_rollback)
    {
        Some(Ok(id)) => Some(id),
        Some(Err(why)) => {
            eprintln!("snapback: {why}; booting normally");
            tracing::warn!("{why}; booting normally");
            None
        }
        None => None,
    };
    let pool = open_pool(&config)?;
    let devices = kernel::activate(&config, pool, rollback)?;
    for device in devices {
        println!("{}", device.display());
    }
    Ok(())
}

fn serve(cli: &Cli) -> Result<(), CliError> {
    let authorization = if cli.no_polkit {
        if std::env::var_os("SNAPBACK_TESTING").is_none_or(|v| v != "1") {
            return Err(CliError::NoPolkitRefused);
        }
        Authorization::DisabledForTesting
    } else {
        Authorization::Polkit
    };
    let (config, cleanup) = config::load_with_cleanup(&cli.config)?;
    let kind = choose_backend(cli.backend)?;
    // Checked now, so that a wrong path is reported before anything else happens.
    let pool = open_pool(&config)?;
    let opener: service::BackendOpener =
        Box::new(move || open_backend(kind, &config, pool).map_err(Into::into));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(service::serve(opener, authorization, cleanup))?;
    Ok(())
}

fn open_pool(config: &Config) -> Result<Pool, CliError> {
    Ok(Pool::open(&config.pool.path)?)
}

fn open_backend(
    kind: BackendKind,
    config: &Config,
    pool: Pool,
) -> Result<Arc<dyn Backend>, CliError> {
    let opened: Arc<dyn Backend> = match kind {
        BackendKind::Kernel => Arc::new(KernelBackend::open(config, pool)?),
        BackendKind::Userspace => {
            let options = UserspaceOptions {
                merge_step_bytes: testing_merge_step_bytes(),
                merge_step_pause: testing_merge_step_pause(),
                io_trace: testing_io_trace(),
                ..UserspaceOptions::default()
            };
            Arc::new(UserspaceBackend::open_with(config, pool, options)?)
        }
        // Never chosen (choose_backend offers the real ones); exists in test builds only.
        #[cfg(feature = "sim")]
        BackendKind::Memory => {
            return Err(
                BackendError::invalid_argument("the memory backend serves tests only").into()
            )
        }
    };
    Ok(opened)
}

/// Tests slow merges down further with a pause after every step, so that "while it merges"
/// does not depend on how fast the machine flushes: `SNAPBACK_TEST_MERGE_STEP_PAUSE_MS`,
/// honoured only together with `SNAPBACK_TESTING=1`.
fn testing_merge_step_pause() -> Option<std::time::Duration> {
    if std::env::var_os("SNAPBACK_TESTING").is_none_or(|v| v != "1") {
        return None;
    }
    let ms: u64 = std::env::var("SNAPBACK_TEST_MERGE_STEP_PAUSE_MS").ok()?.parse().ok()?;
    tracing::warn!(
        "testing: {ms} ms pause after every merge step (SNAPBACK_TEST_MERGE_STEP_PAUSE_MS)"
    );
    Some(std::time::Duration::from_millis(ms))
}

/// Tests slow merges down (small steps, each one committed) to act while one runs:
/// `SNAPBACK_TEST_MERGE_STEP_BYTES`, honoured only together with `SNAPBACK_TESTING=1`.
fn testing_merge_step_bytes() -> Option<u64> {
    if std::env::var_os("SNAPBACK_TESTING").is_none_or(|v| v != "1") {
        return None;
    }
    let bytes = std::env::var("SNAPBACK_TEST_MERGE_STEP_BYTES").ok()?.parse().ok()?;
    tracing::warn!("testing: merge steps of {bytes} bytes (SNAPBACK_TEST_MERGE_STEP_BYTES)");
    Some(bytes)
}

/// Tests chasing a write that did not last log every FUSE write and fsync to a file:
/// `SNAPBACK_TEST_IO_TRACE`, honoured only together with `SNAPBACK_TESTING=1`.
fn testing_io_trace() -> Option<std::path::PathBuf> {
    if std::env::var_os("SNAPBACK_TESTING").is_none_or(|v| v != "1") {
        return None;
    }
    let path = std::path::PathBuf::from(std::env::var_os("SNAPBACK_TEST_IO_TRACE")?);
    tracing::warn!(
        "testing: every volume write and fsync logged to {} (SNAPBACK_TEST_IO_TRACE)",
        path.display()
    );
    Some(path)
}

/// `--backend` if given (kernel only when usable), else detect.
fn choose_backend(choice: Option<BackendChoice>) -> Result<BackendKind, CliError> {
    match choice {
        Some(BackendChoice::Userspace) => Ok(BackendKind::Userspace),
        Some(BackendChoice::Kernel) => {
            kernel_available().map_err(CliError::KernelUnavailable)?;
            Ok(BackendKind::Kernel)
        }
        None => match kernel_available() {
            Ok(()) => Ok(BackendKind::Kernel),
            Err(why) => {
                tracing::info!("using the userspace backend: {why}");
                Ok(BackendKind::Userspace)
            }
        },
    }
}

/// The kernel backend needs the device-mapper control node and the snapshot targets.
fn kernel_available() -> Result<(), String> {
    if !Path::new("/dev/mapper/control").exists() {
        return Err("/dev/mapper/control does not exist (no device-mapper in this kernel)".into());
    }
    kernel::kernel_supported()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_subcommands_parse() {
        let cli = Cli::try_parse_from(["snapbackd"]).unwrap();
        assert_eq!(cli.config, PathBuf::from(DEFAULT_CONFIG_PATH));
        assert!(cli.command.is_none() && cli.backend.is_none() && !cli.no_polkit);

        let cli =
            Cli::try_parse_from(["snapbackd", "--backend", "userspace", "--config", "/x.toml"])
                .unwrap();
        assert_eq!(cli.backend, Some(BackendChoice::Userspace));
        assert_eq!(cli.config, PathBuf::from("/x.toml"));

        let cli =
            Cli::try_parse_from(["snapbackd", "init", "--config", "/y.toml", "--force"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Init { force: true })));
        assert_eq!(cli.config, PathBuf::from("/y.toml"));

        assert!(Cli::try_parse_from(["snapbackd", "--backend", "zfs"]).is_err());
    }
}
