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

#[cfg(test)]
mod tests {
    #[test]
    fn masks_every_secret() {
        let secrets = vec!["s3cret".to_owned(), String::new()];
        assert_eq!(super::mask("a s3cret b s3cret", &secrets), "a *** b ***");
    }
}
