//! What containers print, line by line, with secrets masked.

use bollard::Docker;
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::{Stream, StreamExt};

/// The lines a container prints from now on (after its last `tail` lines, or all of them),
/// with every value of `secrets` replaced by `***`. Ends when the container stops.
pub fn container_output(
    docker: &Docker,
    name: &str,
    tail: Option<u32>,
    secrets: Vec<String>,
) -> impl Stream<Item = String> + use<> {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .follow(true)
        .tail(&tail.map_or_else(|| "all".to_owned(), |n| n.to_string()))
        .build();
    docker
        .logs(name, Some(options))
        .take_while(|item| std::future::ready(item.is_ok()))
        .flat_map(move |item| {
            let bytes = item.map(|o| o.into_bytes()).unwrap_or_default();
            let lines: Vec<String> = String::from_utf8_lossy(&bytes)
                .lines()
                .map(|line| mask(line, &secrets))
                .collect();
            futures_util::stream::iter(lines)
        })
}

/// `text` with every non-empty secret replaced by `***`.
pub fn mask(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret.as_str(), "***");
    }
    text
}

/// A line the engine gave with `timestamps`: the time the container printed it (milliseconds
/// since the epoch) and its text. Docker writes the time as RFC 3339 in UTC
/// (`2026-12-04T17:05:07.123456789Z `), always in this one form, so a few lines read it; a line
/// without it keeps its text and no time.
pub fn split_timestamp(line: &str) -> (Option<i64>, &str) {
    let Some((stamp, text)) = line.split_once(' ') else {
        return (None, line);
    };
    match rfc3339_utc_ms(stamp) {
        Some(ms) => (Some(ms), text),
        None => (None, line),
    }
}

fn rfc3339_utc_ms(stamp: &str) -> Option<i64> {
    let stamp = stamp.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let number = |text: &str| -> Option<i64> {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    let mut date = date.split('-');
    let (year, month, day) = (
        number(date.next()?)?,
        number(date.next()?)?,
        number(date.next()?)?,
    );
    let (clock, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut clock = clock.split(':');
    let (hour, minute, second) = (
        number(clock.next()?)?,
        number(clock.next()?)?,
        number(clock.next()?)?,
    );
    if date.next().is_some() || clock.next().is_some() || !(1..=12).contains(&month) {
        return None;
    }
    let millis = number(&format!("{fraction:0<3}")[..3])?;
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_time_docker_puts_before_a_line() {
        use super::split_timestamp;
        assert_eq!(
            split_timestamp("2026-12-04T17:05:07.123456789Z listening on :8080"),
            (Some(1_796_403_907_123), "listening on :8080")
        );
        assert_eq!(split_timestamp("1970-01-01T00:00:01Z x"), (Some(1000), "x"));
        assert_eq!(
            split_timestamp("2024-02-29T23:59:59.5Z leap"),
            (Some(1_709_251_199_500), "leap")
        );
        assert_eq!(split_timestamp("no time here"), (None, "no time here"));
        assert_eq!(
            split_timestamp("2024-13-01T00:00:00Z x"),
            (None, "2024-13-01T00:00:00Z x")
        );
        assert_eq!(split_timestamp("plain"), (None, "plain"));
    }

    #[test]
    fn masks_every_secret() {
        let secrets = vec!["s3cret".to_owned(), String::new()];
        assert_eq!(super::mask("a s3cret b s3cret", &secrets), "a *** b ***");
    }
}
