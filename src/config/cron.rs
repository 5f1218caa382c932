//! Cron expressions for `<crontab schedule>`: standard crontab or with seconds.

use std::str::FromStr;

/// Parses a cron expression: standard 5-field crontab (minute hour day month weekday,
/// weekday 0-7 with 0 and 7 Sunday), or 6/7 fields with seconds (and years) first.
pub fn parse_cron(text: &str) -> Result<cron::Schedule, String> {
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
        n => {
            return Err(format!(
                "a cron expression has 5 fields (or 6-7 with seconds), this has {n}"
            ))
        }
    };
    cron::Schedule::from_str(&full).map_err(|e| format!("bad cron expression: {e}"))
}

/// crontab numbers weekdays 0-7 from Sunday (0 and 7 both Sunday); the cron crate
/// numbers them 1-7 from Sunday. Names pass through.
fn crontab_weekdays(field: &str) -> Result<String, String> {
    let map = |n: &str| -> Result<String, String> {
        match n.parse::<u8>() {
            Ok(d @ 0..=6) => Ok((d + 1).to_string()),
            Ok(7) => Ok("1".to_owned()),
            Ok(_) => Err(format!("weekday {n} is out of range 0-7")),
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
    fn sunday_is_zero_in_crontab() {
        assert_eq!(crontab_weekdays("0").as_deref(), Ok("1"));
        assert_eq!(crontab_weekdays("7").as_deref(), Ok("1"));
        assert_eq!(crontab_weekdays("1-5").as_deref(), Ok("2-6"));
        assert_eq!(crontab_weekdays("MON").as_deref(), Ok("MON"));
    }
}
