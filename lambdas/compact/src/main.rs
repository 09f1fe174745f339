//! The compact Lambda's entry point: set up once, then serve invocations (see `lib.rs`).

use std::sync::Arc;

use dmarc_tsv_compact::{Compact, handle, support};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    support::init_tracing();
    let state = Arc::new(Compact::from_env().await);
    if let Err(failure) = state.as_ref() {
        tracing::error!("setup failed, every invocation will report it: {failure}");
    }
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        handle(Arc::clone(&state), event)
    }))
    .await
}
