//! Energy storage (I/O): device groups, versioned settings (tariff, shifts, emission
//! factor) and the per-device energy configuration, on SQLite and MySQL through
//! `factoryops-db`. Every function takes the factory scope first; another factory's
//! group is simply not found.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use factoryops_db::{Database, DbError};
use factoryops_types::{DeviceId, FactoryId, PropertyName, new_id};
use serde::{Deserialize, Deserializer, Serialize};
use sqlx::{AssertSqlSafe, Row};

/// A factory has few groups (a plant's hierarchy plus some tags): lists are not
/// paginated, and this bounds them.
pub const MAX_GROUPS_PER_FACTORY: usize = 1_000;
/// Devices one group may list directly.
pub const MAX_DEVICES_PER_GROUP: usize = 5_000;
const MAX_NAME_LEN: usize = 255;
const MAX_LEVEL_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("not found")]
    NotFound,
    /// A device already sits in another hierarchy group.
    #[error(
        "device `{device_id}` already belongs to hierarchy group `{group_id}` ({group_name}); remove it there first"
    )]
    DeviceTaken { device_id: String, group_id: String, group_name: String },
    /// The group still has child groups (delete with `cascade`).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(DbError::from(e))
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> StoreError {
    StoreError::Invalid { field: field.into(), message: message.into() }
}

// ---------------------------------------------------------------------------------------
// Groups

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GroupKind {
    /// The factory's one hierarchy: a device sits in at most one hierarchy group.
    #[default]
    Hierarchy,
    /// A free tag: a device may carry many.
    Tag,
}

impl GroupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKind::Hierarchy => "hierarchy",
            GroupKind::Tag => "tag",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "hierarchy" => Ok(GroupKind::Hierarchy),
            "tag" => Ok(GroupKind::Tag),
            other => Err(StoreError::Db(DbError::Malformed(format!("group kind {other:?}")))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub kind: GroupKind,
    pub parent_id: Option<String>,
    pub level: Option<String>,
    /// Devices listed on this group itself (not its descendants), ordered by id.
    pub devices: Vec<DeviceId>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `POST /groups`. Devices are checked to exist by the caller (it owns the registry).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    #[serde(default)]
    pub kind: GroupKind,
    pub name: String,
    #[serde(default)]
    pub parent_id: Option<String>,
    /// `site`, `area`, `line`, `machine` or free text.
    #[serde(default)]
    pub level: Option<String>,
    #[serde(default)]
    pub devices: Vec<DeviceId>,
}

/// `PATCH /groups/{id}`: absent fields stay; `null` clears `parent_id` (to the top) or
/// `level`; `devices` replaces the member list.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub parent_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub level: Option<Option<String>>,
    #[serde(default)]
    pub devices: Option<Vec<DeviceId>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(de).map(Some)
}

fn check_name(field: &str, name: &str, max: usize) -> Result<(), StoreError> {
    if name.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if name.chars().count() > max || name.chars().any(char::is_control) {
        return Err(invalid(field, format!("at most {max} characters, no control characters")));
    }
    Ok(())
}

fn check_devices(devices: &[DeviceId]) -> Result<(), StoreError> {
    if devices.len() > MAX_DEVICES_PER_GROUP {
        return Err(invalid("devices", format!("at most {MAX_DEVICES_PER_GROUP} devices per group")));
    }
    let mut seen = HashSet::new();
    for (i, d) in devices.iter().enumerate() {
        if !seen.insert(d.as_str()) {
            return Err(invalid(format!("devices[{i}]"), format!("`{d}` is listed twice")));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Versioned settings

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingKind {
    Tariff,
    Shifts,
    EmissionFactor,
}

impl SettingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SettingKind::Tariff => "tariff",
            SettingKind::Shifts => "shifts",
            SettingKind::EmissionFactor => "emission_factor",
        }
    }
}

/// A version to append.
#[derive(Debug, Clone, Copy)]
pub struct NewSetting<'a> {
    pub kind: SettingKind,
    pub valid_from: Option<NaiveDate>,
    /// The body as PUT, without `valid_from`, already validated.
    pub body: &'a serde_json::Value,
    /// The principal (`user:…`, `api_key:…`).
    pub created_by: &'a str,
}

/// One stored version of a setting.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingVersion {
    pub version: i64,
    /// The local date from which it applies; `None` = since always (first version only).
    pub valid_from: Option<NaiveDate>,
    /// The body as PUT, without `valid_from`.
    pub body: serde_json::Value,
    pub created_at: i64,
    pub created_by: String,
}

/// The version in force on the local date `day`: the one with the latest `valid_from` ≤
/// `day` (versions are oldest first, their `valid_from` strictly increasing).
pub fn in_force(versions: &[SettingVersion], day: NaiveDate) -> Option<&SettingVersion> {
    versions.iter().rev().find(|v| v.valid_from.is_none_or(|from| from <= day))
}

// ---------------------------------------------------------------------------------------
// Per-device configuration

/// Which property gives a device's energy, its state property and idle threshold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEnergyConfig {
    /// The property to compute energy from when several are annotated (default: an
    /// energy counter, else a pulse counter, else a power property, by name).
    #[serde(default)]
    pub source_property: Option<PropertyName>,
    /// The state property whose idle/off/setup states count as idle energy.
    #[serde(default)]
    pub state_property: Option<PropertyName>,
    /// Without a state property: power below this (kW) counts as idle.
    #[serde(default)]
    pub idle_below_kw: Option<f64>,
    /// The longest stretch between samples that is bridged (default 15 minutes).
    #[serde(default)]
    pub max_gap_minutes: Option<u32>,
}

/// The longest `max_gap_minutes` accepted: a day.
pub const MAX_GAP_MINUTES: u32 = 24 * 60;
pub const DEFAULT_MAX_GAP_MINUTES: u32 = 15;

impl DeviceEnergyConfig {
    pub fn validate(&self) -> Result<(), StoreError> {
        if let Some(kw) = self.idle_below_kw
            && !(kw.is_finite() && kw >= 0.0)
        {
            return Err(invalid("idle_below_kw", "must be a number ≥ 0 (kW)"));
        }
        if let Some(gap) = self.max_gap_minutes
            && !(1..=MAX_GAP_MINUTES).contains(&gap)
        {
            return Err(invalid("max_gap_minutes", format!("must be between 1 and {MAX_GAP_MINUTES}")));
        }
        Ok(())
    }

    pub fn max_gap_ms(&self) -> i64 {
        i64::from(self.max_gap_minutes.unwrap_or(DEFAULT_MAX_GAP_MINUTES)) * 60_000
    }
}

// ---------------------------------------------------------------------------------------
// EnPI baselines

/// A driver of an EnPI baseline, per local day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Driver {
    /// Units produced by a device (a property annotated `production_count`).
    Production { device_id: DeviceId, property: PropertyName },
    /// `max(0, base − daily mean)` of an outdoor temperature property (°C).
    HeatingDegreeDays { device_id: DeviceId, property: PropertyName, base_c: f64 },
    /// `max(0, daily mean − base)` of an outdoor temperature property (°C).
    CoolingDegreeDays { device_id: DeviceId, property: PropertyName, base_c: f64 },
    /// Hours with non-idle energy of the baseline's own devices.
    OperatingHours,
}

impl Driver {
    /// The driver's name in the model's coefficients.
    pub fn name(&self) -> String {
        match self {
            Driver::Production { device_id, property } => format!("production:{device_id}/{property}"),
            Driver::HeatingDegreeDays { device_id, property, .. } => format!("hdd:{device_id}/{property}"),
            Driver::CoolingDegreeDays { device_id, property, .. } => format!("cdd:{device_id}/{property}"),
            Driver::OperatingHours => "operating_hours".into(),
        }
    }
}

/// A stored baseline version.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub id: String,
    pub name: String,
    /// 1 for the first fit of (name, target), then 2, 3 …
    pub version: i64,
    /// `device` or `group`.
    pub target_kind: String,
    pub target_id: String,
    pub drivers: Vec<Driver>,
    /// The baseline period's local dates `[from, to)`.
    pub period_from: NaiveDate,
    pub period_to: NaiveDate,
    pub model: crate::baseline::Model,
    pub created_at: i64,
    pub created_by: String,
}

const BASELINE_COLUMNS: &str = "baseline_id, name, version, target_kind, target_id, drivers, period_from, period_to, model, created_at, created_by";

fn baseline_from_row(row: &sqlx::any::AnyRow) -> Result<Baseline, StoreError> {
    let malformed = |what: String| StoreError::Db(DbError::Malformed(what));
    let date = |column: &str| -> Result<NaiveDate, StoreError> {
        let text: String = row.try_get(column)?;
        text.parse().map_err(|e| malformed(format!("{column} {text:?}: {e}")))
    };
    let drivers: String = row.try_get("drivers")?;
    let model: String = row.try_get("model")?;
    Ok(Baseline {
        id: row.try_get("baseline_id")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        target_kind: row.try_get("target_kind")?,
        target_id: row.try_get("target_id")?,
        drivers: serde_json::from_str(&drivers).map_err(|e| malformed(format!("baseline drivers: {e}")))?,
        period_from: date("period_from")?,
        period_to: date("period_to")?,
        model: serde_json::from_str(&model).map_err(|e| malformed(format!("baseline model: {e}")))?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct EnergyStore {
    pub(crate) db: Database,
}

const GROUP_COLUMNS: &str = "group_id, name, kind, parent_id, level, created_at, updated_at";

fn group_from_row(row: &sqlx::any::AnyRow) -> Result<Group, StoreError> {
    Ok(Group {
        id: row.try_get("group_id")?,
        name: row.try_get("name")?,
        kind: GroupKind::parse(&row.try_get::<String, _>("kind")?)?,
        parent_id: row.try_get("parent_id")?,
        level: row.try_get("level")?,
        devices: Vec::new(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn device_from(text: String) -> Result<DeviceId, StoreError> {
    DeviceId::parse(&text).map_err(|e| StoreError::Db(DbError::Malformed(format!("device id {text:?}: {e}"))))
}

impl EnergyStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Every group of the factory with its devices, ordered by id (creation order).
    pub async fn list_groups(&self, factory: &FactoryId) -> Result<Vec<Group>, StoreError> {
        self.groups_where(factory, None).await
    }

    pub async fn get_group(&self, factory: &FactoryId, id: &str) -> Result<Option<Group>, StoreError> {
        Ok(self.groups_where(factory, Some(id)).await?.into_iter().next())
    }

    async fn groups_where(&self, factory: &FactoryId, id: Option<&str>) -> Result<Vec<Group>, StoreError> {
        let filter = if id.is_some() { " AND group_id = ?" } else { "" };
        let mut query = sqlx::query(AssertSqlSafe(format!(
            "SELECT {GROUP_COLUMNS} FROM energy_groups WHERE factory_id = ?{filter} ORDER BY group_id"
        )))
        .bind(factory.as_str());
        if let Some(id) = id {
            query = query.bind(id);
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        let mut groups = rows.iter().map(group_from_row).collect::<Result<Vec<_>, _>>()?;
        if groups.is_empty() {
            return Ok(groups);
        }
        let mut query = sqlx::query(AssertSqlSafe(format!(
            "SELECT group_id, device_id FROM energy_group_devices WHERE factory_id = ?{filter} ORDER BY device_id"
        )))
        .bind(factory.as_str());
        if let Some(id) = id {
            query = query.bind(id);
        }
        let mut members: HashMap<String, Vec<DeviceId>> = HashMap::new();
        for row in query.fetch_all(self.db.pool()).await? {
            members.entry(row.try_get("group_id")?).or_default().push(device_from(row.try_get("device_id")?)?);
        }
        for group in &mut groups {
            group.devices = members.remove(&group.id).unwrap_or_default();
        }
        Ok(groups)
    }

    /// Creates a group. The caller has checked that the devices exist in the factory.
    pub async fn create_group(&self, factory: &FactoryId, new: NewGroup, now_ms: i64) -> Result<Group, StoreError> {
        check_name("name", &new.name, MAX_NAME_LEN)?;
        check_devices(&new.devices)?;
        if new.kind == GroupKind::Tag {
            if new.parent_id.is_some() {
                return Err(invalid("parent_id", "tag groups are flat: they have no parent"));
            }
            if new.level.is_some() {
                return Err(invalid("level", "tag groups have no level"));
            }
        }
        if let Some(level) = &new.level {
            check_name("level", level, MAX_LEVEL_LEN)?;
        }
        let id = new_id();
        let mut tx = self.db.begin_write().await?;
        let lock = self.db.dialect().lock_rows();
        let count: i64 =
            sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM energy_groups WHERE factory_id = ?{lock}")))
                .bind(factory.as_str())
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
        if count >= MAX_GROUPS_PER_FACTORY as i64 {
            return Err(StoreError::Conflict(format!("a factory has at most {MAX_GROUPS_PER_FACTORY} groups")));
        }
        if let Some(parent) = &new.parent_id {
            check_parent(&mut tx, factory, parent, lock).await?;
        }
        sqlx::query(
            "INSERT INTO energy_groups (factory_id, group_id, name, kind, parent_id, level, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(factory.as_str())
        .bind(&id)
        .bind(&new.name)
        .bind(new.kind.as_str())
        .bind(new.parent_id.as_deref())
        .bind(new.level.as_deref())
        .bind(now_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        set_members(&mut tx, factory, &id, new.kind, &new.devices, lock).await?;
        tx.commit().await?;
        self.get_group(factory, &id)
            .await?
            .ok_or_else(|| StoreError::Db(DbError::Malformed("group vanished after insert".into())))
    }

    /// Applies a partial update; `NotFound` when the group is not this factory's.
    pub async fn update_group(
        &self,
        factory: &FactoryId,
        id: &str,
        update: GroupUpdate,
        now_ms: i64,
    ) -> Result<Group, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let lock = self.db.dialect().lock_rows();
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {GROUP_COLUMNS} FROM energy_groups WHERE factory_id = ? AND group_id = ?{lock}"
        )))
        .bind(factory.as_str())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(mut group) = row.as_ref().map(group_from_row).transpose()? else {
            return Err(StoreError::NotFound);
        };
        if let Some(name) = update.name {
            check_name("name", &name, MAX_NAME_LEN)?;
            group.name = name;
        }
        if let Some(level) = update.level {
            if let Some(level) = &level {
                if group.kind == GroupKind::Tag {
                    return Err(invalid("level", "tag groups have no level"));
                }
                check_name("level", level, MAX_LEVEL_LEN)?;
            }
            group.level = level;
        }
        if let Some(parent) = update.parent_id {
            if let Some(parent) = &parent {
                if group.kind == GroupKind::Tag {
                    return Err(invalid("parent_id", "tag groups are flat: they have no parent"));
                }
                check_parent(&mut tx, factory, parent, lock).await?;
                // The new parent must not be the group itself nor one of its descendants.
                let parents = parent_map(&mut tx, factory).await?;
                let mut at = Some(parent.clone());
                while let Some(current) = at {
                    if current == id {
                        return Err(invalid("parent_id", "would make a cycle: the parent is this group or below it"));
                    }
                    at = parents.get(&current).cloned().flatten();
                }
            }
            group.parent_id = parent;
        }
        sqlx::query(
            "UPDATE energy_groups SET name = ?, parent_id = ?, level = ?, updated_at = ? WHERE factory_id = ? AND group_id = ?",
        )
        .bind(&group.name)
        .bind(group.parent_id.as_deref())
        .bind(group.level.as_deref())
        .bind(now_ms)
        .bind(factory.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if let Some(devices) = update.devices {
            check_devices(&devices)?;
            set_members(&mut tx, factory, id, group.kind, &devices, lock).await?;
        }
        tx.commit().await?;
        self.get_group(factory, id).await?.ok_or(StoreError::NotFound)
    }

    /// Deletes a group; with children only when `cascade` (then the whole subtree goes).
    /// Returns the ids deleted.
    pub async fn delete_group(&self, factory: &FactoryId, id: &str, cascade: bool) -> Result<Vec<String>, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let parents = parent_map(&mut tx, factory).await?;
        if !parents.contains_key(id) {
            return Err(StoreError::NotFound);
        }
        let subtree = descendants(&parents, id);
        if subtree.len() > 1 && !cascade {
            return Err(StoreError::Conflict(format!(
                "the group has {} child group(s) below it: delete them first or pass ?cascade=true",
                subtree.len() - 1
            )));
        }
        for group in &subtree {
            for table in ["energy_group_devices", "energy_groups"] {
                sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE factory_id = ? AND group_id = ?")))
                    .bind(factory.as_str())
                    .bind(group)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(subtree)
    }

    /// The devices of a group and all its descendants (sorted, unique); `None` when the
    /// group is not this factory's.
    pub async fn group_rollup(&self, factory: &FactoryId, id: &str) -> Result<Option<Vec<DeviceId>>, StoreError> {
        let groups = self.list_groups(factory).await?;
        let parents: HashMap<String, Option<String>> =
            groups.iter().map(|g| (g.id.clone(), g.parent_id.clone())).collect();
        if !parents.contains_key(id) {
            return Ok(None);
        }
        let subtree: HashSet<String> = descendants(&parents, id).into_iter().collect();
        let mut devices: Vec<DeviceId> =
            groups.into_iter().filter(|g| subtree.contains(&g.id)).flat_map(|g| g.devices).collect();
        devices.sort();
        devices.dedup();
        Ok(Some(devices))
    }

    // -----------------------------------------------------------------------------------
    // Settings

    /// Every version of a setting, oldest first.
    pub async fn setting_versions(
        &self,
        factory: &FactoryId,
        kind: SettingKind,
    ) -> Result<Vec<SettingVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, valid_from, body, created_at, created_by FROM energy_settings \
             WHERE factory_id = ? AND kind = ? ORDER BY version",
        )
        .bind(factory.as_str())
        .bind(kind.as_str())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(setting_from_row).collect()
    }

    /// Appends a version. `valid_from` may be omitted only on the first version (since
    /// always); otherwise it must be after the last version's and not before `today`
    /// (the factory's local date), so results for past days never change.
    pub async fn append_setting(
        &self,
        factory: &FactoryId,
        new: NewSetting<'_>,
        today: NaiveDate,
        now_ms: i64,
    ) -> Result<SettingVersion, StoreError> {
        let NewSetting { kind, valid_from, body, created_by } = new;
        let mut tx = self.db.begin_write().await?;
        let lock = self.db.dialect().lock_rows();
        let last = sqlx::query(AssertSqlSafe(format!(
            "SELECT version, valid_from, body, created_at, created_by FROM energy_settings \
             WHERE factory_id = ? AND kind = ? ORDER BY version DESC LIMIT 1{lock}"
        )))
        .bind(factory.as_str())
        .bind(kind.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(setting_from_row)
        .transpose()?;
        match (valid_from, &last) {
            (None, Some(_)) => {
                return Err(invalid(
                    "valid_from",
                    "is required: a new version applies from a date (today or later), so past results never change",
                ));
            }
            (Some(from), _) if from < today => {
                return Err(invalid(
                    "valid_from",
                    format!("must not be before today ({today}): past results never change"),
                ));
            }
            (Some(from), Some(SettingVersion { valid_from: Some(previous), .. })) if from <= *previous => {
                return Err(invalid("valid_from", format!("must be after the current last version's ({previous})")));
            }
            _ => {}
        }
        let version = last.map_or(1, |v| v.version + 1);
        let text = serde_json::to_string(body).map_err(|e| StoreError::Db(DbError::Malformed(e.to_string())))?;
        let inserted = sqlx::query(
            "INSERT INTO energy_settings (factory_id, kind, version, valid_from, body, created_at, created_by) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(factory.as_str())
        .bind(kind.as_str())
        .bind(version)
        .bind(valid_from.map(|d| d.to_string()))
        .bind(text)
        .bind(now_ms)
        .bind(created_by)
        .execute(&mut *tx)
        .await
        .map_err(DbError::from);
        match inserted {
            Ok(_) => {}
            Err(e) if e.is_unique_violation() => {
                return Err(StoreError::Conflict("another version was stored at the same time; retry".into()));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(SettingVersion {
            version,
            valid_from,
            body: body.clone(),
            created_at: now_ms,
            created_by: created_by.into(),
        })
    }

    // -----------------------------------------------------------------------------------
    // Baselines

    /// Stores a fitted baseline as the next version of its (name, target); `version` and
    /// `id` of the argument are ignored.
    pub async fn create_baseline(&self, factory: &FactoryId, mut baseline: Baseline) -> Result<Baseline, StoreError> {
        check_name("name", &baseline.name, MAX_NAME_LEN)?;
        let malformed = |e: serde_json::Error| StoreError::Db(DbError::Malformed(e.to_string()));
        let drivers = serde_json::to_string(&baseline.drivers).map_err(malformed)?;
        let model = serde_json::to_string(&baseline.model).map_err(malformed)?;
        let mut tx = self.db.begin_write().await?;
        let lock = self.db.dialect().lock_rows();
        let last: Option<i64> = sqlx::query(AssertSqlSafe(format!(
            "SELECT version FROM energy_baselines WHERE factory_id = ? AND name = ? AND target_kind = ? AND target_id = ? \
             ORDER BY version DESC LIMIT 1{lock}"
        )))
        .bind(factory.as_str())
        .bind(&baseline.name)
        .bind(&baseline.target_kind)
        .bind(&baseline.target_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get("version"))
        .transpose()?;
        baseline.version = last.map_or(1, |v| v + 1);
        baseline.id = new_id();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO energy_baselines (factory_id, {BASELINE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(factory.as_str())
        .bind(&baseline.id)
        .bind(&baseline.name)
        .bind(baseline.version)
        .bind(&baseline.target_kind)
        .bind(&baseline.target_id)
        .bind(drivers)
        .bind(baseline.period_from.to_string())
        .bind(baseline.period_to.to_string())
        .bind(model)
        .bind(baseline.created_at)
        .bind(&baseline.created_by)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(baseline)
    }

    /// The factory's baselines, oldest first (a factory keeps few: one per EnPI and fit).
    pub async fn list_baselines(&self, factory: &FactoryId) -> Result<Vec<Baseline>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {BASELINE_COLUMNS} FROM energy_baselines WHERE factory_id = ? ORDER BY baseline_id LIMIT 1000"
        )))
        .bind(factory.as_str())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(baseline_from_row).collect()
    }

    pub async fn get_baseline(&self, factory: &FactoryId, id: &str) -> Result<Option<Baseline>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {BASELINE_COLUMNS} FROM energy_baselines WHERE factory_id = ? AND baseline_id = ?"
        )))
        .bind(factory.as_str())
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(baseline_from_row).transpose()
    }

    // -----------------------------------------------------------------------------------
    // Device configuration

    /// The device's stored configuration and when it was set; `None` = defaults.
    pub async fn device_config(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
    ) -> Result<Option<(DeviceEnergyConfig, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT device_id, source_property, state_property, idle_below_kw, max_gap_minutes, updated_at \
             FROM energy_device_config WHERE factory_id = ? AND device_id = ?",
        )
        .bind(factory.as_str())
        .bind(device.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|r| Ok((config_from_row(&r)?, r.try_get("updated_at")?))).transpose()
    }

    /// Every device configuration of the factory.
    pub async fn device_configs(
        &self,
        factory: &FactoryId,
    ) -> Result<HashMap<DeviceId, DeviceEnergyConfig>, StoreError> {
        let rows = sqlx::query(
            "SELECT device_id, source_property, state_property, idle_below_kw, max_gap_minutes, updated_at \
             FROM energy_device_config WHERE factory_id = ?",
        )
        .bind(factory.as_str())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(|r| Ok((device_from(r.try_get("device_id")?)?, config_from_row(r)?))).collect()
    }

    /// Replaces the device's configuration.
    pub async fn put_device_config(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        config: &DeviceEnergyConfig,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        config.validate()?;
        let mut tx = self.db.begin_write().await?;
        sqlx::query("DELETE FROM energy_device_config WHERE factory_id = ? AND device_id = ?")
            .bind(factory.as_str())
            .bind(device.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO energy_device_config (factory_id, device_id, source_property, state_property, idle_below_kw, max_gap_minutes, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(factory.as_str())
        .bind(device.as_str())
        .bind(config.source_property.as_ref().map(|p| p.as_str().to_string()))
        .bind(config.state_property.as_ref().map(|p| p.as_str().to_string()))
        .bind(config.idle_below_kw)
        .bind(config.max_gap_minutes.map(i64::from))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

fn setting_from_row(row: &sqlx::any::AnyRow) -> Result<SettingVersion, StoreError> {
    let malformed = |what: String| StoreError::Db(DbError::Malformed(what));
    let valid_from: Option<String> = row.try_get("valid_from")?;
    let valid_from = valid_from
        .map(|d| d.parse::<NaiveDate>().map_err(|e| malformed(format!("valid_from {d:?}: {e}"))))
        .transpose()?;
    let body: String = row.try_get("body")?;
    Ok(SettingVersion {
        version: row.try_get("version")?,
        valid_from,
        body: serde_json::from_str(&body).map_err(|e| malformed(format!("setting body: {e}")))?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

fn config_from_row(row: &sqlx::any::AnyRow) -> Result<DeviceEnergyConfig, StoreError> {
    let property = |column: &str| -> Result<Option<PropertyName>, StoreError> {
        let text: Option<String> = row.try_get(column)?;
        text.map(|t| {
            PropertyName::parse(&t).map_err(|e| StoreError::Db(DbError::Malformed(format!("{column} {t:?}: {e}"))))
        })
        .transpose()
    };
    let gap: Option<i64> = row.try_get("max_gap_minutes")?;
    Ok(DeviceEnergyConfig {
        source_property: property("source_property")?,
        state_property: property("state_property")?,
        idle_below_kw: row.try_get("idle_below_kw")?,
        max_gap_minutes: gap.and_then(|g| u32::try_from(g).ok()),
    })
}

/// The parent must be an existing hierarchy group of the factory.
async fn check_parent(
    tx: &mut factoryops_db::WriteTx,
    factory: &FactoryId,
    parent: &str,
    lock: &str,
) -> Result<(), StoreError> {
    let kind: Option<String> = sqlx::query(AssertSqlSafe(format!(
        "SELECT kind FROM energy_groups WHERE factory_id = ? AND group_id = ?{lock}"
    )))
    .bind(factory.as_str())
    .bind(parent)
    .fetch_optional(&mut **tx)
    .await?
    .map(|r| r.try_get("kind"))
    .transpose()?;
    match kind.as_deref() {
        None => Err(invalid("parent_id", format!("no such group `{parent}`"))),
        Some("hierarchy") => Ok(()),
        Some(_) => Err(invalid("parent_id", "a tag group cannot be a parent")),
    }
}

/// group id → parent id, for the whole factory.
async fn parent_map(
    tx: &mut factoryops_db::WriteTx,
    factory: &FactoryId,
) -> Result<HashMap<String, Option<String>>, StoreError> {
    let rows = sqlx::query("SELECT group_id, parent_id FROM energy_groups WHERE factory_id = ?")
        .bind(factory.as_str())
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(|r| Ok((r.try_get("group_id")?, r.try_get("parent_id")?))).collect()
}

/// `id` and every group below it, parents before children.
fn descendants(parents: &HashMap<String, Option<String>>, id: &str) -> Vec<String> {
    let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (group, parent) in parents {
        if let Some(parent) = parent {
            children.entry(parent.as_str()).or_default().push(group.as_str());
        }
    }
    let mut out = vec![id.to_string()];
    let mut at = 0;
    while at < out.len() {
        let current = out[at].clone();
        if let Some(kids) = children.get(current.as_str()) {
            // A stored cycle cannot happen (updates refuse it), but never loop on one.
            out.extend(kids.iter().filter(|k| !out.iter().any(|o| o == *k)).map(|k| k.to_string()).collect::<Vec<_>>());
        }
        at += 1;
    }
    out
}

/// Replaces a group's members; a device in another hierarchy group is a conflict naming it.
async fn set_members(
    tx: &mut factoryops_db::WriteTx,
    factory: &FactoryId,
    group: &str,
    kind: GroupKind,
    devices: &[DeviceId],
    lock: &str,
) -> Result<(), StoreError> {
    if kind == GroupKind::Hierarchy && !devices.is_empty() {
        for chunk in devices.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut query = sqlx::query(AssertSqlSafe(format!(
                "SELECT d.device_id, d.group_id, g.name FROM energy_group_devices d \
                 JOIN energy_groups g ON g.factory_id = d.factory_id AND g.group_id = d.group_id \
                 WHERE d.factory_id = ? AND d.group_id <> ? AND d.hierarchy_device IN ({marks}) ORDER BY d.device_id{lock}"
            )))
            .bind(factory.as_str())
            .bind(group);
            for d in chunk {
                query = query.bind(d.as_str());
            }
            if let Some(row) = query.fetch_optional(&mut **tx).await? {
                return Err(StoreError::DeviceTaken {
                    device_id: row.try_get("device_id")?,
                    group_id: row.try_get("group_id")?,
                    group_name: row.try_get("name")?,
                });
            }
        }
    }
    sqlx::query("DELETE FROM energy_group_devices WHERE factory_id = ? AND group_id = ?")
        .bind(factory.as_str())
        .bind(group)
        .execute(&mut **tx)
        .await?;
    for d in devices {
        let inserted = sqlx::query(
            "INSERT INTO energy_group_devices (factory_id, group_id, device_id, hierarchy_device) VALUES (?, ?, ?, ?)",
        )
        .bind(factory.as_str())
        .bind(group)
        .bind(d.as_str())
        .bind((kind == GroupKind::Hierarchy).then(|| d.as_str().to_string()))
        .execute(&mut **tx)
        .await
        .map_err(DbError::from);
        match inserted {
            Ok(_) => {}
            // A concurrent writer placed the device elsewhere between the check and here.
            Err(e) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!("device `{d}` was just placed in another hierarchy group")));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn version(valid_from: Option<&str>, n: i64) -> SettingVersion {
        SettingVersion {
            version: n,
            valid_from: valid_from.map(|d| d.parse().unwrap()),
            body: serde_json::json!({"n": n}),
            created_at: 0,
            created_by: "t".into(),
        }
    }

    #[test]
    fn the_version_in_force_is_the_latest_started_one() {
        let versions = [version(None, 1), version(Some("2026-03-01"), 2), version(Some("2026-04-01"), 3)];
        let on = |d: &str| in_force(&versions, d.parse().unwrap()).map(|v| v.version);
        assert_eq!(on("2020-01-01"), Some(1));
        assert_eq!(on("2026-02-28"), Some(1));
        assert_eq!(on("2026-03-01"), Some(2));
        assert_eq!(on("2026-12-31"), Some(3));
        let later_only = [version(Some("2026-03-01"), 1)];
        assert_eq!(in_force(&later_only, "2026-02-01".parse().unwrap()).map(|v| v.version), None);
    }

    #[test]
    fn descendants_walk_the_subtree() {
        let parents: HashMap<String, Option<String>> =
            [("site", None), ("area", Some("site")), ("line", Some("area")), ("other", None), ("line2", Some("area"))]
                .into_iter()
                .map(|(g, p)| (g.to_string(), p.map(str::to_string)))
                .collect();
        let mut below = descendants(&parents, "area");
        below.sort();
        assert_eq!(below, ["area", "line", "line2"]);
        assert_eq!(descendants(&parents, "other"), ["other"]);
    }
}
