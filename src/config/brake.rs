//! `<deleteBrake>`: the brake on mass deletes' rule, read and checked.

use std::time::Duration;

use super::{raw, ConfigError, Ctx};

/// `<deleteBrake>`: more deletes waiting for one remote within `window` than `count`
/// and than `percent` of the entries its tree had are held until the operator releases
/// or discards them (`sync::ledger`'s brake). On unless `start="false"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteBrake {
    /// A share of the tree's entries, 0 to 100; 0: the count alone decides.
    pub percent: u8,
    /// At least this many deletes (1 or more).
    pub count: usize,
    /// The window deletes are counted in.
    pub window: Duration,
    /// How long a delete waits before it may go (zero: at once), so that the deletes of
    /// one `rm -rf` are counted together before any of them reaches a remote.
    pub settle: Duration,
}

impl Default for DeleteBrake {
    /// More than half the tree and at least 1,000 entries within a minute: a deploy
    /// that replaces a release (delete the old files, write the new ones) deletes what
    /// it writes, less than half of a tree that also holds what is not deployed, and a
    /// site or tree of a few hundred entries never reaches 1,000 (README, "The brake on
    /// mass deletes").
    fn default() -> Self {
        DeleteBrake {
            percent: 50,
            count: 1000,
            window: Duration::from_secs(60),
            settle: Duration::from_secs(DEFAULT_SETTLE_SECONDS),
        }
    }
}

/// How long a delete waits by default before it may go (`<deleteBrake settle>`): an
/// `rm -rf` deletes thousands of entries a second, so its deletes past the count are
/// seen within this time, before any of them has gone out.
pub const DEFAULT_SETTLE_SECONDS: u64 = 2;

/// The longest `<deleteBrake settle>`: an hour.
pub const MAX_SETTLE_SECONDS: u64 = 3_600;

/// The longest window of `<deleteBrake seconds>`: a day.
pub const MAX_BRAKE_SECONDS: u64 = 86_400;

/// `<deleteBrake>`: on with the defaults when absent; each attribute a whole number in
/// its range, else refused with what to write.
pub(super) fn delete_brake(
    cx: &Ctx,
    b: Option<&raw::DeleteBrake>,
) -> Result<Option<DeleteBrake>, ConfigError> {
    let Some(b) = b else {
        return Ok(Some(DeleteBrake::default()));
    };
    if !cx.flag(b.start.as_deref(), b.line, "deleteBrake", "start", true)? {
        return Ok(None);
    }
    let mut brake = DeleteBrake::default();
    let whole = |attr: &str, value: Option<&str>, min: u64, max: u64, example: &str| {
        let Some(v) = value else {
            return Ok(None);
        };
        match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(cx.err(
                b.line,
                format!(
                    "<deleteBrake {attr}=\"{v}\">: must be a whole number from {min} to {max}; \
                     write e.g. {attr}=\"{example}\""
                ),
            )),
        }
    };
    if let Some(p) = whole("percent", b.percent.as_deref(), 0, 100, "50")? {
        brake.percent = u8::try_from(p).unwrap_or(100);
    }
    if let Some(c) = whole("count", b.count.as_deref(), 1, 1 << 40, "1000")? {
        brake.count = usize::try_from(c).unwrap_or(usize::MAX);
    }
    if let Some(s) = whole("seconds", b.seconds.as_deref(), 1, MAX_BRAKE_SECONDS, "60")? {
        brake.window = Duration::from_secs(s);
    }
    if let Some(s) = whole("settle", b.settle.as_deref(), 0, MAX_SETTLE_SECONDS, "2")? {
        brake.settle = Duration::from_secs(s);
    }
    Ok(Some(brake))
}
