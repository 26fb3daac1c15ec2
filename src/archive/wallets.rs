//! The wallet pool: several Arweave wallets (JWK files from a directory or systemd credentials, never from
//! config.toml), used in turn so that one empty, lost or compromised wallet never stops archival.
//!
//! A wallet is skipped while an operator has it disabled (shared in the database, so every node and the CLI see
//! the same decision without a restart) or while it is known to be short of funds (a 402, or a polled balance
//! below the price of an item). Balances and the runway (balance divided by the recent rate of spending) are
//! exported as metrics and logged as a warning under a threshold.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::jwk::Jwk;

/// One wallet of the pool.
pub struct Wallet {
    /// The wallet's Arweave address.
    pub address: String,
    /// Its JWK file.
    pub file: PathBuf,
    jwk: Jwk,
    state: Mutex<WalletState>,
}

#[derive(Debug, Default, Clone)]
struct WalletState {
    balance: Option<u128>,
    runway: Option<Duration>,
    short_until: Option<Instant>,
    disabled: bool,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("address", &self.address)
            .finish()
    }
}

impl Wallet {
    /// The key, for signing.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WalletState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn usable(&self, now: Instant) -> bool {
        let s = self.state();
        !s.disabled && s.short_until.is_none_or(|t| now >= t)
    }
}

/// A wallet as `zipiq archive status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WalletStatus {
    /// The wallet's Arweave address.
    pub address: String,
    /// Its JWK file.
    pub file: String,
    /// Whether it is disabled (`zipiq wallets disable`).
    pub disabled: bool,
    /// Known short of funds (until the next successful balance read or the back-off ends).
    pub short_of_funds: bool,
    /// The last balance read, in winston (decimal); None before the first read.
    pub balance_winston: Option<String>,
    /// How long the balance lasts at the recent spend, in hours; None when unknown.
    pub runway_hours: Option<f64>,
}

/// Why wallets could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// The directory could not be read.
    #[error("cannot read the wallets directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
}

/// Every wallet zipIQ may sign with.
pub struct WalletPool {
    dir: PathBuf,
    wallets: RwLock<Vec<Arc<Wallet>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for WalletPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalletPool")
            .field("dir", &self.dir)
            .finish()
    }
}

/// Reads every `*.json` wallet of `dir`; a file that is not a valid Arweave JWK is logged and skipped.
fn read_dir(dir: &Path) -> Result<Vec<Arc<Wallet>>, WalletError> {
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    read_dir_with(dir, credentials.as_deref())
}

/// `read_dir`, with the systemd credentials directory given (None: not run by systemd).
fn read_dir_with(dir: &Path, credentials: Option<&Path>) -> Result<Vec<Arc<Wallet>>, WalletError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(WalletError::Dir {
                path: dir.to_owned(),
                source,
            });
        }
    };
    // In the systemd credentials directory, only the files of the `wallets` credential are wallets.
    let credentials = credentials == Some(dir);
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| {
            !credentials
                || p.file_name().is_some_and(|n| {
                    n.to_string_lossy()
                        .starts_with(crate::config::WALLET_CREDENTIAL_PREFIX)
                })
        })
        .collect();
    files.sort();
    let mut wallets = Vec::new();
    let mut seen = HashSet::new();
    for file in files {
        let loaded = std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|bytes| Jwk::from_json(&bytes).map_err(|e| e.to_string()));
        match loaded {
            Ok(jwk) => {
                let address = jwk.address().to_owned();
                if seen.insert(address.clone()) {
                    wallets.push(Arc::new(Wallet {
                        address,
                        file,
                        jwk,
                        state: Mutex::new(WalletState::default()),
                    }));
                }
            }
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "not a usable Arweave wallet; skipped")
            }
        }
    }
    Ok(wallets)
}

impl WalletPool {
    /// Loads the wallets of `dir` (a missing directory is an empty pool).
    pub fn load(dir: &Path) -> Result<WalletPool, WalletError> {
        let wallets = read_dir(dir)?;
        Ok(WalletPool {
            dir: dir.to_owned(),
            wallets: RwLock::new(wallets),
            next: AtomicUsize::new(0),
        })
    }

    /// Reads the directory again (SIGHUP): new files join, removed ones leave. Returns (added, removed) addresses.
    pub fn reload(&self) -> Result<(Vec<String>, Vec<String>), WalletError> {
        let fresh = read_dir(&self.dir)?;
        let mut current = self.wallets.write().unwrap_or_else(|p| p.into_inner());
        let old: HashSet<String> = current.iter().map(|w| w.address.clone()).collect();
        let new: HashSet<String> = fresh.iter().map(|w| w.address.clone()).collect();
        let added: Vec<String> = new.difference(&old).cloned().collect();
        let removed: Vec<String> = old.difference(&new).cloned().collect();
        // Keep the state (balance, disabled) of wallets that stay.
        let merged = fresh
            .into_iter()
            .map(|w| {
                current
                    .iter()
                    .find(|c| c.address == w.address)
                    .cloned()
                    .unwrap_or(w)
            })
            .collect();
        *current = merged;
        Ok((added, removed))
    }

    fn all(&self) -> Vec<Arc<Wallet>> {
        self.wallets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Number of wallets loaded.
    pub fn len(&self) -> usize {
        self.wallets.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no wallet is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Addresses of every wallet (owners to filter GraphQL proofs by).
    pub fn addresses(&self) -> Vec<String> {
        self.all().iter().map(|w| w.address.clone()).collect()
    }

    /// The wallet with `address`.
    pub fn get(&self, address: &str) -> Option<Arc<Wallet>> {
        self.all().into_iter().find(|w| w.address == address)
    }

    /// Whether any wallet can be used now.
    pub fn has_usable(&self) -> bool {
        let now = Instant::now();
        self.all().iter().any(|w| w.usable(now))
    }

    /// The next usable wallet in turn, skipping `exclude`.
    pub fn pick(&self, exclude: &[String]) -> Option<Arc<Wallet>> {
        let wallets = self.all();
        if wallets.is_empty() {
            return None;
        }
        let now = Instant::now();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..wallets.len())
            .map(|i| &wallets[(start + i) % wallets.len()])
            .find(|w| w.usable(now) && !exclude.contains(&w.address))
            .cloned()
    }

    /// The wallet ran short of funds (a 402, or a balance under an item's price): skip it for `pause`.
    pub fn mark_short(&self, address: &str, pause: Duration) {
        if let Some(w) = self.get(address) {
            w.state().short_until = Some(Instant::now() + pause);
            tracing::warn!(wallet = %address, ?pause, "wallet short of funds: using the others");
        }
    }

    /// Applies the operator's disabled list (from the database).
    pub fn apply_disabled(&self, disabled: &[String]) {
        for w in self.all() {
            let now_disabled = disabled.contains(&w.address);
            let mut s = w.state();
            if s.disabled != now_disabled {
                tracing::warn!(wallet = %w.address, disabled = now_disabled, "wallet state changed by an operator");
            }
            s.disabled = now_disabled;
        }
    }

    /// Records a balance reading (and the runway it gives at `spend_per_hour` winston per hour).
    pub fn set_balance(
        &self,
        address: &str,
        balance: u128,
        spend_per_hour: Option<u128>,
        item_price: u128,
    ) {
        let Some(w) = self.get(address) else { return };
        let mut s = w.state();
        s.balance = Some(balance);
        s.runway = spend_per_hour
            .filter(|&spend| spend > 0)
            .map(|spend| Duration::from_secs_f64(balance as f64 / spend as f64 * 3600.0));
        if balance >= item_price {
            s.short_until = None;
        } else {
            s.short_until = Some(Instant::now() + Duration::from_secs(3600));
        }
        metrics::gauge!("zipiq_wallet_balance_winston", "wallet" => address.to_owned())
            .set(balance as f64);
        if let Some(runway) = s.runway {
            metrics::gauge!("zipiq_wallet_runway_seconds", "wallet" => address.to_owned())
                .set(runway.as_secs_f64());
        }
    }

    /// The runway of a wallet.
    pub fn runway(&self, address: &str) -> Option<Duration> {
        self.get(address).and_then(|w| w.state().runway)
    }

    /// Every wallet's status.
    pub fn statuses(&self) -> Vec<WalletStatus> {
        let now = Instant::now();
        self.all()
            .iter()
            .map(|w| {
                let s = w.state().clone();
                WalletStatus {
                    address: w.address.clone(),
                    file: w.file.display().to_string(),
                    disabled: s.disabled,
                    short_of_funds: s.short_until.is_some_and(|t| now < t),
                    balance_winston: s.balance.map(|b| b.to_string()),
                    runway_hours: s.runway.map(|r| r.as_secs_f64() / 3600.0),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod credential_tests {
    use super::*;

    /// systemd loads `LoadCredential=wallets:<dir>` as one credential per file, `wallets_<file name>`, beside the
    /// other credentials: those files, and only those, are the wallets.
    #[test]
    fn wallets_come_from_a_systemd_directory_credential() {
        let creds = tempfile::tempdir().unwrap();
        let wallet = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/wallets/test-only-a.json"),
        )
        .unwrap();
        std::fs::write(creds.path().join("wallets_a.json"), &wallet).unwrap();
        std::fs::write(creds.path().join("jwt-key"), "not a wallet").unwrap();
        std::fs::write(creds.path().join("other.json"), &wallet).unwrap();
        let config = crate::config::Config::from_layers(None, Vec::new())
            .unwrap()
            .archive;
        assert_eq!(config.wallets_path_with(Some(creds.path())), creds.path());
        let wallets = read_dir_with(creds.path(), Some(creds.path())).unwrap();
        assert_eq!(wallets.len(), 1);
        assert!(wallets[0].file.ends_with("wallets_a.json"));
        // Without wallet credentials, the default directory.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            config.wallets_path_with(Some(empty.path())),
            PathBuf::from("./data/wallets")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_wallets() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/wallets")
    }

    #[test]
    fn loads_the_test_wallets_and_rotates_over_usable_ones() {
        let pool = WalletPool::load(&test_wallets()).expect("load");
        assert_eq!(pool.len(), 2);
        let a = pool.pick(&[]).expect("a wallet").address.clone();
        let b = pool.pick(&[]).expect("a wallet").address.clone();
        assert_ne!(a, b, "turns");
        pool.mark_short(&a, Duration::from_secs(60));
        for _ in 0..4 {
            assert_eq!(
                pool.pick(&[]).unwrap().address,
                b,
                "a short wallet is skipped"
            );
        }
        assert!(pool.pick(std::slice::from_ref(&b)).is_none());
        pool.apply_disabled(std::slice::from_ref(&b));
        assert!(!pool.has_usable());
        pool.set_balance(&a, 10_000, Some(1_000), 100);
        assert_eq!(pool.pick(&[]).unwrap().address, a, "funds again");
        assert_eq!(pool.runway(&a), Some(Duration::from_secs(36_000)));
        let statuses = pool.statuses();
        assert!(statuses.iter().any(|s| s.address == b && s.disabled));
    }

    #[test]
    fn bad_files_are_skipped_and_a_missing_dir_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.json"), b"{\"kty\":\"RSA\"}").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let pool = WalletPool::load(dir.path()).unwrap();
        assert!(pool.is_empty());
        let missing = WalletPool::load(&dir.path().join("nope")).unwrap();
        assert!(missing.is_empty());
        std::fs::copy(
            test_wallets().join("test-only-a.json"),
            dir.path().join("a.json"),
        )
        .unwrap();
        let (added, removed) = pool.reload().unwrap();
        assert_eq!((added.len(), removed.len()), (1, 0));
    }
}
