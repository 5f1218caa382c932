//! Cron expressions for `<crontab schedule>`: standard crontab or with seconds.

use std::str::FromStr;

/// Why a `<crontab schedule>` is not a cron expression.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    #[error("a cron expression has 5 fields (or 6-7 with seconds), this has {0}")]
    Fields(usize),
    /// A crontab weekday number over 7.
    #[error("weekday {0} is out of range 0-7")]
    Weekday(String),
    /// What the cron crate refuses.
    #[error("bad cron expression: {0}")]
    Invalid(cron::error::Error),
}

/// Parses a cron expression: standard 5-field crontab (minute hour day month weekday,
/// weekday 0-7 with 0 and 7 Sunday), or 6/7 fields with seconds (and years) first.
pub fn parse_cron(text: &str) -> Result<cron::Schedule, CronError> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let full = match fields.len() {
        5 => {
            let dow = crontab_weekdays(fields[4])?;
            format!(
                "0 {} {} {} {} {}",
                fields[0], fields[1], fields[2], fields[3], dow
            )
        }
        6 | 7 => fields.join(" "),
        n => return Err(CronError::Fields(n)),
    };
    cron::Schedule::from_str(&full).map_err(CronError::Invalid)
}

/// crontab numbers weekdays 0-7 from Sunday (0 and 7 both Sunday); the cron crate
/// numbers them 1-7 from Sunday. Names pass through.
fn crontab_weekdays(field: &str) -> Result<String, CronError> {
    let map = |n: &str| -> Result<String, CronError> {
        match n.parse::<u8>() {
            Ok(d @ 0..=6) => Ok((d + 1).to_string()),
            Ok(7) => Ok("1".to_owned()),
            Ok(_) => Err(CronError::Weekday(n.to_owned())),
            Err(_) => Ok(n.to_owned()),
        }
    };
    let mut parts = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let mapped = match range.split_once('-') {
            // 5-7 (Fri-Sun) would wrap in the crate's numbering: split it.
            Some((a, "7")) => {
                let a = map(a)?;
                if a == "1" {
                    "1-7".to_owned()
                } else {
                    format!("{a}-7,1")
                }
            }
            Some((a, b)) => format!("{}-{}", map(a)?, map(b)?),
            None => map(range)?,
        };
        match step {
            Some(s) => parts.push(format!("{mapped}/{s}")),
            None => parts.push(mapped),
        }
    }
    Ok(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_field_crontab_is_accepted() {
        assert!(parse_cron("*/10 * * * *").is_ok());
        assert!(parse_cron("30 2 * * 0").is_ok());
        assert!(parse_cron("0 3 * * 1-5").is_ok());
        assert!(parse_cron("0 3 * * 5-7").is_ok());
    }

    #[test]
    fn seconds_forms_are_accepted() {
        assert!(parse_cron("0 */5 * * * *").is_ok());
        assert!(parse_cron("0 0 3 * * * 2030").is_ok());
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(parse_cron("every hour").is_err());
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("* * * * 9").is_err());
    }

    #[test]
    fn the_errors_read_as_before_they_were_typed() {
        let text = |e: &str| parse_cron(e).err().map(|e| e.to_string());
        assert_eq!(
            text("every hour").as_deref(),
            Some("a cron expression has 5 fields (or 6-7 with seconds), this has 2")
        );
        assert_eq!(
            text("* * * * 9").as_deref(),
            Some("weekday 9 is out of range 0-7")
        );
        assert!(text("61 * * * *").is_some_and(|t| t.starts_with("bad cron expression: ")));
    }

    #[test]
    fn sunday_is_zero_in_crontab() {
        assert_eq!(crontab_weekdays("0").ok().as_deref(), Some("1"));
        assert_eq!(crontab_weekdays("7").ok().as_deref(), Some("1"));
        assert_eq!(crontab_weekdays("1-5").ok().as_deref(), Some("2-6"));
        assert_eq!(crontab_weekdays("MON").ok().as_deref(), Some("MON"));
    }
}
