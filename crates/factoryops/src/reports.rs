//! The reports component's job handler (ADR 0024): `report_render` gathers a report's
//! data from the services in the factory's time zone, builds the document with
//! `factoryops-reports`, renders it on the jobs' CPU pool and stores the file create-only
//! at `{factory}/reports/{sha256}.{ext}`. The routes live in
//! `factoryops_api::routes::reports`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use factoryops_api::routes::reports::{REPORT_RENDER, ReportOutput, ReportPayload};
use factoryops_energy::calendar::Bucket;
use factoryops_energy::service::{Consumption, EnergyService, PeakPeriod, ServiceError, Target};
use factoryops_identity::Identity;
use factoryops_ingest::DeviceRegistry;
use factoryops_jobs::{Job, JobContext, JobError, JobHandler, Output};
use factoryops_notify::{NotificationQuery, NotificationStore};
use factoryops_objstore::health::StorageStatus;
use factoryops_objstore::{Area, ObjectKey, ObjectStore, StoreError};
use factoryops_reports::build::alerts::{AlertHistoryRecord, AlertRecord, AlertsInput, NotificationRecord};
use factoryops_reports::build::energy::{BillInput, EnergyBucket, EnergyInput, EnergyTotal, GapInput, PeakEntry};
use factoryops_reports::{Header, Report};
use factoryops_rules::{AlertQuery, RulesStore};
use factoryops_types::{Clock, DeviceId, FactoryId};
use sha2::{Digest, Sha256};

/// The demand interval of the energy report's daily peaks (the usual billing average).
const PEAK_INTERVAL_MINUTES: u32 = 15;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn store_error(e: StoreError) -> JobError {
    if e.is_retryable() { JobError::Retryable(e.to_string()) } else { JobError::Permanent(e.to_string()) }
}

/// A request the service refuses will be refused again; a store that failed may answer
/// on the next attempt.
fn energy_error(e: ServiceError) -> JobError {
    match e {
        ServiceError::Invalid { .. } | ServiceError::NotFound(_) | ServiceError::Setting { .. } => {
            JobError::permanent(e)
        }
        ServiceError::Store(_) | ServiceError::Tsdb(_) | ServiceError::Directory(_) => JobError::retryable(e),
    }
}

/// `report_render`.
pub struct ReportRender {
    pub energy: EnergyService,
    /// Alerts with their history (the alerts report).
    pub alerts: RulesStore,
    /// The delivery log (the alerts report's notification figures).
    pub notifications: NotificationStore,
    pub devices: DeviceRegistry,
    pub identity: Arc<Identity>,
    pub objects: Arc<dyn ObjectStore>,
    pub storage: StorageStatus,
    pub clock: Arc<dyn Clock>,
}

#[async_trait]
impl JobHandler for ReportRender {
    async fn run(&self, job: &Job, ctx: JobContext) -> Result<Output, JobError> {
        let factory = ctx.factory_id().cloned().ok_or_else(|| JobError::permanent("a report needs a factory"))?;
        let payload: ReportPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::permanent(format!("malformed report payload: {e}")))?;
        self.storage.ensure_available().map_err(store_error)?;
        let Some(f) = self.identity.factory(&factory).await.map_err(JobError::retryable)? else {
            return Err(JobError::permanent("the factory no longer exists"));
        };
        let header = Header {
            factory_name: f.name,
            time_zone: f.timezone,
            from_ms: payload.from_ms,
            to_ms: payload.to_ms,
            generated_at_ms: self.clock.now_ms(),
        };
        let report = match payload.kind.as_str() {
            "energy" => {
                let input = self.energy_input(&factory, &payload, header, &ctx).await?;
                ctx.cpu(move || factoryops_reports::build::energy::build(&input)).await?.map_err(JobError::permanent)?
            }
            "alerts" => {
                let input = self.alerts_input(&factory, &payload, header, &ctx).await?;
                ctx.cpu(move || factoryops_reports::build::alerts::build(&input)).await?.map_err(JobError::permanent)?
            }
            other => return Err(JobError::permanent(format!("unknown report kind {other:?}"))),
        };
        ctx.checkpoint()?;
        ctx.progress(0.8);
        let format = payload.format;
        let filename = factoryops_reports::file_name(&report, format);
        let bytes = ctx.cpu(move || render(&report, format)).await??;
        let sha256 = hex(&Sha256::digest(&bytes));
        let size = bytes.len() as u64;
        let object = format!("{sha256}.{}", format.extension());
        let key = ObjectKey::new(&factory, Area::Reports, object.clone()).map_err(JobError::permanent)?;
        // Create-only: the same bytes again (a retry, the same report twice) are harmless.
        let outcome = self.objects.put(&key, Bytes::from(bytes)).await.map_err(store_error)?;
        tracing::info!(report_id = %job.id, %sha256, size, ?outcome, "report stored");
        ctx.log(format!("{filename}: {size} bytes, sha256 {sha256}"));
        ctx.progress(1.0);
        let output = ReportOutput { object, sha256, size, filename };
        Ok(Some(serde_json::to_value(&output).map_err(JobError::permanent)?))
    }
}

fn render(report: &Report, format: factoryops_reports::Format) -> Result<Vec<u8>, JobError> {
    factoryops_reports::render(report, format).map_err(JobError::permanent)
}

impl ReportRender {
    /// The energy report's figures, all from the energy service (so they equal what the
    /// energy endpoints answer): the selection by local day, its daily peaks, its bill,
    /// and every device's own totals.
    async fn energy_input(
        &self,
        factory: &FactoryId,
        payload: &ReportPayload,
        header: Header,
        ctx: &JobContext,
    ) -> Result<EnergyInput, JobError> {
        let (from, to) = (payload.from_ms, payload.to_ms);
        let devices: Vec<DeviceId> = match &payload.devices {
            Some(ids) => ids
                .iter()
                .map(|d| DeviceId::parse(d).map_err(|e| JobError::permanent(format!("device {d:?}: {e}"))))
                .collect::<Result<_, _>>()?,
            None => self.energy.devices_of(factory, &Target::Factory).await.map_err(energy_error)?,
        };
        // The whole factory, or one device, is a target of its own; a selection of several
        // is summed from its devices (no common peak or bill).
        let target = match (&payload.devices, devices.as_slice()) {
            (None, _) => Some(Target::Factory),
            (Some(_), [one]) => Some(Target::Device(one.clone())),
            _ => None,
        };

        let mut totals = Vec::with_capacity(devices.len());
        let mut per_device: Vec<Consumption> = Vec::with_capacity(devices.len());
        for (i, device) in devices.iter().enumerate() {
            ctx.checkpoint()?;
            let c = self
                .energy
                .consumption(factory, &Target::Device(device.clone()), from, to, Bucket::Day)
                .await
                .map_err(energy_error)?;
            let name = match self.devices.get(factory, device).await.map_err(JobError::retryable)? {
                Some(d) => d.name,
                None => device.to_string(),
            };
            totals.push(EnergyTotal {
                id: device.to_string(),
                name,
                group: None,
                kwh: c.items.iter().map(|b| b.kwh).sum(),
                cost: sum_opt(c.items.iter().map(|b| b.cost)),
                co2_kg: sum_opt(c.items.iter().map(|b| b.co2_kg)),
                idle_kwh: c.items.iter().map(|b| b.idle_kwh).sum(),
            });
            per_device.push(c);
            ctx.progress(0.6 * (i + 1) as f64 / devices.len().max(1) as f64);
        }

        let (selection, peaks, shifts) = match &target {
            Some(target) => {
                let selection =
                    self.energy.consumption(factory, target, from, to, Bucket::Day).await.map_err(energy_error)?;
                let peaks = self
                    .energy
                    .peak_demand(factory, target, from, to, PEAK_INTERVAL_MINUTES, PeakPeriod::Day)
                    .await
                    .map_err(energy_error)?;
                // Shifts only when the factory has a calendar.
                let shifts = match self.energy.consumption(factory, target, from, to, Bucket::Shift).await {
                    Ok(c) => c.items,
                    Err(ServiceError::Invalid { .. }) => Vec::new(),
                    Err(e) => return Err(energy_error(e)),
                };
                (Some(selection), peaks.items, shifts)
            }
            None => (None, Vec::new(), Vec::new()),
        };
        ctx.progress(0.7);

        let bucket = |b: &factoryops_energy::service::ConsumptionItem| EnergyBucket {
            start_ms: b.start_ms,
            end_ms: b.end_ms,
            shift: b.shift.clone(),
            kwh: b.kwh,
            cost: b.cost,
            co2_kg: b.co2_kg,
            idle_kwh: b.idle_kwh,
        };
        let gap = |g: &factoryops_energy::service::DeviceGap| GapInput {
            device: g.device_id.to_string(),
            from_ms: g.from_ms,
            to_ms: g.to_ms,
        };
        let name_of = |id: &DeviceId| {
            totals.iter().find(|t| t.id == id.as_str()).map_or_else(|| id.to_string(), |t| t.name.clone())
        };
        let input = match selection {
            Some(c) => EnergyInput {
                currency: c.currency.clone(),
                days: c.items.iter().map(bucket).collect(),
                bill: c.charges.as_ref().map(|b| BillInput {
                    currency: b.currency.clone(),
                    energy_cost: b.energy_cost,
                    demand_charges: b.demand.iter().map(|d| d.charge).sum(),
                    fixed: b.fixed,
                    total: b.total,
                }),
                gaps: c.gaps.iter().map(gap).collect(),
                without_source: c.without_source.iter().map(&name_of).collect(),
                ..EnergyInput::default()
            },
            None => {
                // The devices' days line up (same zone, same range): add them up.
                let mut days: Vec<EnergyBucket> =
                    per_device.first().map(|c| c.items.iter().map(bucket).collect()).unwrap_or_default();
                for c in per_device.iter().skip(1) {
                    for (day, item) in days.iter_mut().zip(&c.items) {
                        day.kwh += item.kwh;
                        day.idle_kwh += item.idle_kwh;
                        day.cost = add_opt(day.cost, item.cost);
                        day.co2_kg = add_opt(day.co2_kg, item.co2_kg);
                    }
                }
                EnergyInput {
                    currency: per_device.iter().find_map(|c| c.currency.clone()),
                    days,
                    gaps: per_device.iter().flat_map(|c| c.gaps.iter().map(gap)).collect(),
                    without_source: per_device.iter().flat_map(|c| c.without_source.iter().map(&name_of)).collect(),
                    ..EnergyInput::default()
                }
            }
        };
        let peaks = peaks
            .into_iter()
            .map(|p| PeakEntry {
                period_start_ms: p.period_start_ms,
                kw: p.kw,
                at_ms: p.at_ms,
                top_devices: p.top_devices.iter().map(|(d, kw)| (name_of(d), *kw)).collect(),
            })
            .collect();
        Ok(EnergyInput {
            header,
            shifts: shifts.iter().map(bucket).collect(),
            devices: totals,
            peak_interval_minutes: PEAK_INTERVAL_MINUTES,
            peaks,
            ..input
        })
    }
}

impl ReportRender {
    /// The alerts opened in the period (of the selected devices), each with its history,
    /// and the notifications about them created in the period.
    async fn alerts_input(
        &self,
        factory: &FactoryId,
        payload: &ReportPayload,
        header: Header,
        ctx: &JobContext,
    ) -> Result<AlertsInput, JobError> {
        let (from, to) = (payload.from_ms, payload.to_ms);
        let mut listed = Vec::new();
        let mut cursor = None;
        loop {
            ctx.checkpoint()?;
            let query =
                AlertQuery { from: Some(from), to: Some(to), cursor, limit: Some(500), ..AlertQuery::default() };
            let page = self.alerts.list_alerts(factory, &query).await.map_err(JobError::retryable)?;
            listed.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        if let Some(devices) = &payload.devices {
            listed.retain(|a| devices.contains(&a.device_id));
        }
        let mut names = std::collections::HashMap::new();
        let mut alerts = Vec::with_capacity(listed.len());
        let mut notifications = Vec::new();
        let total = listed.len().max(1);
        for (i, alert) in listed.iter().enumerate() {
            ctx.checkpoint()?;
            let full = self.alerts.get_alert(factory, &alert.id).await.map_err(JobError::retryable)?;
            if !names.contains_key(&full.device_id) {
                let name = match DeviceId::parse(&full.device_id) {
                    Ok(id) => self.devices.get(factory, &id).await.map_err(JobError::retryable)?.map(|d| d.name),
                    Err(_) => None,
                };
                names.insert(full.device_id.clone(), name);
            }
            let mut cursor = None;
            loop {
                let query = NotificationQuery {
                    alert_id: Some(full.id.clone()),
                    cursor,
                    limit: Some(500),
                    ..NotificationQuery::default()
                };
                let page = self.notifications.list(factory, &query).await.map_err(JobError::retryable)?;
                notifications.extend(page.items.into_iter().filter(|n| n.created_at >= from && n.created_at < to).map(
                    |n| NotificationRecord {
                        id: n.id,
                        alert_id: n.alert_id,
                        channel: n.channel.as_str().to_string(),
                        status: n.status.as_str().to_string(),
                        attempts: n.attempts,
                        created_at_ms: n.created_at,
                        delivered_at_ms: n.delivered_at,
                    },
                ));
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            alerts.push(AlertRecord {
                device_name: names.get(&full.device_id).cloned().flatten(),
                id: full.id,
                rule_id: full.rule_id,
                rule_name: full.rule_name,
                device_id: full.device_id,
                severity: full.severity.as_str().to_string(),
                status: full.status.as_str().to_string(),
                count: full.count,
                opened_at_ms: full.opened_at,
                acknowledged_at_ms: full.acknowledged_at,
                resolved_at_ms: full.resolved_at,
                history: full
                    .history
                    .unwrap_or_default()
                    .into_iter()
                    .map(|h| AlertHistoryRecord { at_ms: h.at, status: h.status.as_str().to_string(), by: h.by })
                    .collect(),
            });
            ctx.progress(0.7 * (i + 1) as f64 / total as f64);
        }
        // The builder reads them oldest first; the store lists newest first.
        alerts.reverse();
        Ok(AlertsInput { header, alerts, notifications })
    }
}

fn sum_opt(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    values.into_iter().flatten().fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
}

fn add_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
    }
}

/// Registers `report_render` on the runtime.
pub fn register(runtime: &mut factoryops_jobs::JobRuntime, handler: ReportRender) {
    runtime.register(REPORT_RENDER, Arc::new(handler));
}
