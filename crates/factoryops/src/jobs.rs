//! The job runtime's wiring (ADR 0018): the `jobs.*` keys, and the one place where
//! components register the handlers of their job kinds.

use std::time::Duration;

use factoryops_jobs::RuntimeConfig;
use factoryops_platform::Config;

/// The `jobs.*` keys as the runtime's configuration; the lease owner is unique per process.
pub fn runtime_config(config: &Config) -> RuntimeConfig {
    let jobs = &config.jobs;
    RuntimeConfig {
        owner: format!("factoryops-{}", factoryops_types::new_id()),
        lease: Duration::from_secs(jobs.lease_secs),
        poll_interval: Duration::from_millis(jobs.poll_interval_ms),
        backoff_base: Duration::from_secs(jobs.backoff_base_secs),
        backoff_max: Duration::from_secs(jobs.backoff_max_secs.max(jobs.backoff_base_secs)),
        default_concurrency: jobs.default_concurrency,
        concurrency: jobs.concurrency.clone(),
        cpu_threads: jobs.cpu_threads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jobs_keys_reach_the_runtime() {
        let mut config = Config::default();
        config.jobs.concurrency.insert("dataset_export".into(), 2);
        config.jobs.cpu_threads = 2;
        config.jobs.lease_secs = 30;
        let runtime = runtime_config(&config);
        assert_eq!(runtime.concurrency["dataset_export"], 2);
        assert_eq!((runtime.cpu_threads, runtime.default_concurrency), (2, 1));
        assert_eq!((runtime.lease, runtime.backoff_base), (Duration::from_secs(30), Duration::from_secs(10)));
        assert_ne!(runtime_config(&config).owner, runtime.owner, "one owner per process start");
    }
}
