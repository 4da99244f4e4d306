use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use anyhow::Context;
use buildgrid_registry::Registry;
use buildgrid_store::Store;

/// How often counted downloads are written to the store.
const DOWNLOAD_FLUSH_INTERVAL: Duration = Duration::from_secs(2);

pub fn run(data: &Path, listen: SocketAddr, workers: Option<usize>) -> anyhow::Result<()> {
    let store = Arc::new(
        Store::open(data)
            .with_context(|| format!("cannot open the data directory {}", data.display()))?,
    );
    let registry = web::Data::new(Registry::new(store.clone()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let app_registry = registry.clone();
        let app_store = store.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .configure(|cfg| buildgrid_registry::configure(cfg, app_registry.clone()))
                .configure(|cfg| buildgrid_web::configure(cfg, app_store.clone()))
        });
        if let Some(workers) = workers {
            server = server.workers(workers);
        }
        let server = server
            .bind(listen)
            .with_context(|| format!("cannot listen on {listen}"))?;
        for address in server.addrs() {
            // Tests and scripts read this line to learn the port.
            println!("buildgrid listening on http://{address}");
        }
        let flusher = registry.clone();
        let flushing = tokio::spawn(async move {
            let mut tick = tokio::time::interval(DOWNLOAD_FLUSH_INTERVAL);
            loop {
                tick.tick().await;
                let registry = flusher.clone();
                let _ = tokio::task::spawn_blocking(move || registry.flush_downloads()).await;
            }
        });
        let result = server.run().await;
        flushing.abort();
        registry.flush_downloads();
        result.context("the HTTP server failed")
    })
}
