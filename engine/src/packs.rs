//! Loading packs from disk: `pack.yaml`, actions and their Rhai scripts, workflows, rules,
//! sensors, aliases, policies and the config schema. Every problem is collected, each with its
//! file and (when known) line and column, so `squall pack validate` can list them all at once.
//!
//! Loading never runs a script and never stops at the first problem: a broken file is reported
//! and skipped, the rest of the pack still loads.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use squall_actions::{ActionMeta, RhaiRuntime, RunnerType};
use squall_rules::{Alias, Rule, RuleSet};

/// One problem found while loading, located in a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl Problem {
    fn new(
        file: &Path,
        line: Option<usize>,
        column: Option<usize>,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// `pack.yaml`, with the fields st2 packs carry.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PackMeta {
    #[serde(rename = "ref", default)]
    pub reference: Option<String>,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub contributors: Vec<String>,
    #[serde(default)]
    pub python_versions: Vec<String>,
    #[serde(default)]
    pub stackstorm_version: Option<String>,
    #[serde(default)]
    pub system: Option<serde_yaml::Value>,
}

fn default_version() -> String {
    "0.0.0".to_string()
}

/// An action with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedAction {
    pub reference: String,
    pub pack: String,
    pub meta: ActionMeta,
    /// The metadata file.
    pub file: PathBuf,
    /// The entry point (script or workflow), resolved against the pack's `actions/` folder.
    pub entry_point: PathBuf,
    /// A Rhai script's source, read once at load.
    pub source: Option<Arc<str>>,
}

/// A rule with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedRule {
    pub rule: Rule,
    pub file: PathBuf,
}

/// An action alias (`aliases/*.yaml`) with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedAlias {
    /// `pack.name`.
    pub reference: String,
    pub alias: Alias,
    pub file: PathBuf,
}

/// A loaded pack.
#[derive(Debug, Clone)]
pub struct Pack {
    pub reference: String,
    pub meta: PackMeta,
    pub dir: PathBuf,
    pub actions: Vec<LoadedAction>,
    pub rules: Vec<LoadedRule>,
    pub aliases: Vec<LoadedAlias>,
    pub config_schema: Option<Value>,
    /// The deployment's settings for this pack (`configs/<pack>.yaml`), checked against the
    /// schema with its defaults applied; scripts see it as `ctx.config`.
    pub config: serde_json::Map<String, Value>,
    /// Why the deployment's config does not fit the pack's schema, if it does not: the pack's
    /// actions then fail with this rather than run with a config they were not written for
    /// (as st2 fails them).
    pub config_error: Option<String>,
    /// Settings in the config that the schema does not declare: kept for actions, not given to
    /// sensors (which refuse settings they do not know).
    pub config_undeclared: Vec<String>,
    /// Where the deployment's config for this pack is read from (`<configs>/<pack>.yaml`).
    pub config_file: Option<PathBuf>,
    /// The other YAML files of the pack (sensors, policies), syntax-checked, keyed by
    /// their folder name.
    pub extras: BTreeMap<String, Vec<(PathBuf, Value)>>,
}

/// Everything loaded from a set of pack folders, with every problem found.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub packs: Vec<Pack>,
    pub problems: Vec<Problem>,
}

impl Catalog {
    pub fn action(&self, reference: &str) -> Option<&LoadedAction> {
        self.packs
            .iter()
            .flat_map(|p| p.actions.iter())
            .find(|a| a.reference == reference)
    }

    pub fn actions(&self) -> impl Iterator<Item = &LoadedAction> {
        self.packs.iter().flat_map(|p| p.actions.iter())
    }

    /// The alias with this reference (`pack.name`).
    pub fn alias(&self, reference: &str) -> Option<&LoadedAlias> {
        self.aliases().find(|a| a.reference == reference)
    }

    /// Every pack's aliases, in pack order.
    pub fn aliases(&self) -> impl Iterator<Item = &LoadedAlias> {
        self.packs.iter().flat_map(|p| p.aliases.iter())
    }

    pub fn rules(&self) -> impl Iterator<Item = &LoadedRule> {
        self.packs.iter().flat_map(|p| p.rules.iter())
    }

    /// Enables or disables the rules `enabled` names (by reference) over what their files
    /// say: the rules enabled or disabled through the API.
    pub fn set_rules_enabled(&mut self, enabled: &HashMap<String, bool>) {
        if enabled.is_empty() {
            return;
        }
        for rule in self.packs.iter_mut().flat_map(|p| p.rules.iter_mut()) {
            if let Some(e) = enabled.get(&rule.rule.reference()) {
                rule.rule.enabled = *e;
            }
        }
    }

    /// The enabled and disabled rules of every pack, compiled and indexed.
    pub fn rule_set(&self) -> Result<RuleSet, Vec<(String, String)>> {
        RuleSet::new(self.rules().map(|r| r.rule.clone()).collect())
    }
}

/// Loads every pack found in `dirs`: each is a pack (holds `pack.yaml`) or a folder of packs.
pub fn load_packs(dirs: &[PathBuf], runtime: &RhaiRuntime) -> Catalog {
    let mut catalog = Catalog::default();
    let mut pack_dirs = Vec::new();
    for dir in dirs {
        if dir.join("pack.yaml").is_file() {
            pack_dirs.push(dir.clone());
            continue;
        }
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                let mut found: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.join("pack.yaml").is_file())
                    .collect();
                found.sort();
                if found.is_empty() {
                    catalog.problems.push(Problem::new(
                        dir,
                        None,
                        None,
                        "neither a pack (no pack.yaml) nor a folder of packs",
                    ));
                }
                pack_dirs.extend(found);
            }
            Err(e) => {
                catalog
                    .problems
                    .push(Problem::new(dir, None, None, format!("cannot read: {e}")))
            }
        }
    }

    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for dir in pack_dirs {
        if let Some(pack) = load_pack(&dir, runtime, &mut catalog.problems) {
            if let Some(first) = seen.get(&pack.reference) {
                catalog.problems.push(Problem::new(
                    &dir.join("pack.yaml"),
                    None,
                    None,
                    format!(
                        "pack '{}' is already loaded from {}",
                        pack.reference,
                        first.display()
                    ),
                ));
                continue;
            }
            seen.insert(pack.reference.clone(), dir.clone());
            catalog.packs.push(pack);
        }
    }
    check_cross_references(&mut catalog);
    let policy_problems = crate::policies::check(&catalog);
    catalog.problems.extend(policy_problems);
    // Sensor declarations' problems do not depend on the deployment's configs.
    let (_, sensor_problems) = crate::sensing::declarations(&catalog);
    catalog.problems.extend(sensor_problems);
    catalog
}

/// Loads packs as [`load_packs`] does, then each pack's deployment config from
/// `<configs_dir>/<pack>.yaml`, checked against the pack's `config.schema.yaml` (st2's format:
/// each key with `type`, `required`, `default`, `secret`, `description`). A missing file is an
/// empty config; a required key without a value, a value of the wrong type or a key the schema
/// does not declare is a problem, reported with the config file.
pub fn load_packs_with_configs(
    dirs: &[PathBuf],
    configs_dir: &Path,
    runtime: &RhaiRuntime,
) -> Catalog {
    let mut catalog = load_packs(dirs, runtime);
    let mut problems = Vec::new();
    for pack in &mut catalog.packs {
        let file = configs_dir.join(format!("{}.yaml", pack.reference));
        pack.config_file = Some(file.clone());
        let given = if file.is_file() {
            match parse_yaml_value(&file, &mut problems) {
                Some(Value::Object(m)) => m,
                Some(Value::Null) => serde_json::Map::new(),
                Some(_) => {
                    problems.push(Problem::new(
                        &file,
                        Some(1),
                        None,
                        "a pack config must be a mapping of settings",
                    ));
                    pack.config_error =
                        Some(format!("{} is not a mapping of settings", file.display()));
                    continue;
                }
                None => {
                    pack.config_error = Some(format!("{} does not parse", file.display()));
                    continue;
                }
            }
        } else {
            serde_json::Map::new()
        };
        let Some(schema) = &pack.config_schema else {
            if !given.is_empty() {
                problems.push(Problem::new(
                    &file,
                    None,
                    None,
                    format!(
                        "pack '{}' has no config.schema.yaml, so it takes no settings",
                        pack.reference
                    ),
                ));
            }
            continue;
        };
        let meta = match config_meta(&pack.dir.join("config.schema.yaml"), schema) {
            Ok((m, _)) => m,
            Err(_) => {
                pack.config_error = Some(format!(
                    "{} is not a valid config schema",
                    pack.dir.join("config.schema.yaml").display()
                ));
                continue;
            }
        };
        // A single value where the schema wants a list is a list of one (`master: http://m:5050`).
        let mut given = given;
        for (name, spec) in &meta.parameters {
            if spec.ty == squall_actions::ParamType::Array {
                if let Some(v @ Value::String(_)) = given.get(name).cloned() {
                    if serde_json::from_str::<Value>(v.as_str().unwrap_or_default())
                        .map(|j| !j.is_array())
                        .unwrap_or(true)
                    {
                        given.insert(name.clone(), Value::Array(vec![v]));
                    }
                }
            }
        }
        // Settings the schema does not declare are kept as given (st2 lets them through) and
        // reported, since most are typos.
        let text = read_or_empty(&file);
        let extra: Vec<(String, Value)> = given
            .iter()
            .filter(|(name, _)| !meta.parameters.contains_key(*name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let broken: Vec<&String> = match schema {
            Value::Object(m) => m
                .keys()
                .filter(|k| !meta.parameters.contains_key(*k))
                .collect(),
            _ => Vec::new(),
        };
        for (name, _) in &extra {
            given.remove(name);
            if broken.contains(&name) {
                // Its schema was reported at load: kept as given.
                continue;
            }
            problems.push(Problem::new(
                &file,
                squall_rules::line_of(&text, name),
                None,
                format!(
                    "setting '{name}' is not in config.schema.yaml (it declares: {}); kept as given",
                    meta.parameters.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        match squall_actions::validate_params(&meta, given) {
            Ok(config) => {
                pack.config = config;
                pack.config_undeclared = extra.iter().map(|(name, _)| name.clone()).collect();
                pack.config.extend(extra);
            }
            Err(errors) => {
                let shown = if file.is_file() {
                    file.clone()
                } else {
                    file.with_extension("yaml (missing)")
                };
                let mut why = Vec::new();
                for e in errors {
                    let line = squall_rules::line_of(&text, &e.parameter);
                    let message = format!("setting '{}': {}", e.parameter, e.message);
                    why.push(message.clone());
                    problems.push(Problem::new(&shown, line, None, message));
                }
                pack.config_error = Some(format!(
                    "{} does not fit the pack's config.schema.yaml: {}",
                    shown.display(),
                    why.join("; ")
                ));
            }
        }
    }
    catalog.problems.extend(problems);
    catalog
}

/// A config schema read as action parameters, so settings are checked and cast like them.
/// A setting whose own schema has a problem is left out of the result and reported; the others
/// are kept (st2 does not drop a pack's whole config for one bad entry). `Err` only when the
/// file is not a mapping of settings.
fn config_meta(file: &Path, schema: &Value) -> Result<(ActionMeta, Vec<Problem>), Vec<Problem>> {
    let params = match schema {
        Value::Object(m) => m.clone(),
        Value::Null => serde_json::Map::new(),
        _ => {
            return Err(vec![Problem::new(
                file,
                Some(1),
                None,
                "config.schema.yaml must map each setting to its schema",
            )])
        }
    };
    let as_meta = |params: serde_json::Map<String, Value>| {
        let doc = serde_json::json!({
            "name": "config",
            "runner_type": "rhai",
            "entry_point": "config",
            "parameters": params,
        });
        ActionMeta::from_yaml(&serde_yaml::to_string(&doc).unwrap_or_default())
    };
    let source = read_or_empty(file);
    let located = |p: squall_actions::SourceProblem, setting: Option<&str>| {
        let line = setting
            .or_else(|| p.message.split('\'').nth(1))
            .and_then(|name| squall_rules::line_of(&source, name));
        Problem::new(file, line, None, p.message)
    };
    match as_meta(params.clone()) {
        Ok(meta) => Ok((meta, Vec::new())),
        Err(_) => {
            // Find which settings are at fault by reading each on its own.
            let mut good = serde_json::Map::new();
            let mut problems = Vec::new();
            for (name, spec) in params {
                let one = serde_json::Map::from_iter([(name.clone(), spec.clone())]);
                match as_meta(one) {
                    Ok(_) => {
                        good.insert(name, spec);
                    }
                    Err(errs) => problems.extend(errs.into_iter().map(|p| {
                        let mut p = located(p, Some(&name));
                        p.message = format!(
                            "{}; setting '{name}' is kept as given, unchecked",
                            p.message
                        );
                        p
                    })),
                }
            }
            match as_meta(good) {
                Ok(meta) => Ok((meta, problems)),
                Err(errs) => Err(errs.into_iter().map(|p| located(p, None)).collect()),
            }
        }
    }
}

/// The built-in trigger types whose instances carry the parameters their rules give (a
/// webhook's url, a timer's schedule). A pack's sensor trigger type takes parameters when it
/// declares a `parameters_schema` (see [`crate::sensing::declared_trigger_types`]).
const PARAMETERIZED_TRIGGERS: [&str; 4] = [
    "core.webhook",
    "core.interval_timer",
    "core.cron_timer",
    "core.date_timer",
];

/// Checks what needs every pack: rules name actions that exist, dependencies are loaded, and
/// the rule set compiles.
fn check_cross_references(catalog: &mut Catalog) {
    let actions: std::collections::HashSet<String> =
        catalog.actions().map(|a| a.reference.clone()).collect();
    let packs: HashMap<String, String> = catalog
        .packs
        .iter()
        .map(|p| (p.reference.clone(), p.meta.version.clone()))
        .collect();
    let declared: HashMap<String, Value> = crate::sensing::declared_trigger_types(catalog)
        .into_iter()
        .filter_map(|t| t.parameters_schema.map(|s| (t.reference, s)))
        .collect();
    let mut problems = Vec::new();
    for pack in &catalog.packs {
        for text in &pack.meta.dependencies {
            let dep = crate::pack_install::Dependency::parse(text);
            let why = match packs.get(&dep.name) {
                None => format!("depends on pack {dep}, which is not loaded"),
                Some(version) if !dep.fits(version) => {
                    format!("depends on pack {dep}, which is loaded at version {version}")
                }
                Some(_) => continue,
            };
            problems.push(Problem::new(
                &pack.dir.join("pack.yaml"),
                squall_rules::line_of(&read_or_empty(&pack.dir.join("pack.yaml")), "dependencies"),
                None,
                why,
            ));
        }
    }
    // A rule that cannot run as written is reported and left out, like a file that does not
    // parse: one whose action no loaded pack provides, one that gives parameters to a trigger
    // whose instances carry none (it could never match), and any later one with the same ref
    // (loading both would enforce the "same" rule twice for every instance).
    let mut refs: HashMap<String, PathBuf> = HashMap::new();
    for pack in &mut catalog.packs {
        pack.rules.retain_mut(|r| {
            let reference = r.rule.reference();
            let trigger = squall_rules::canonical_trigger_ref(&r.rule.trigger_type);
            if trigger == "core.webhook" {
                // Matched as the hook's name: `url: /deploy` is the hook POST
                // /api/v1/webhooks/deploy reaches.
                if let Some(Value::String(url)) = r.rule.trigger_parameters.get_mut("url") {
                    *url = crate::model::hook_name(url).to_string();
                }
            }
            // Reports the rule as not loaded, at the line of `key` in its file.
            let mut refuse = |key: &str, message: String| {
                let text = read_or_empty(&r.file);
                problems.push(Problem::new(
                    &r.file,
                    squall_rules::line_of(&text, key),
                    None,
                    format!("rule '{reference}' {message}; the rule is not loaded"),
                ));
                false
            };
            if let (false, Some(schema)) =
                (r.rule.trigger_parameters.is_empty(), declared.get(trigger))
            {
                // Checked as st2 checks them: the parameters against the declared schema.
                let schema = as_object_schema(schema);
                let mut why = Vec::new();
                squall_actions::schema::validate(
                    &schema,
                    &Value::Object(r.rule.trigger_parameters.clone()),
                    "parameters",
                    &mut why,
                );
                if !why.is_empty() {
                    return refuse(
                        "parameters",
                        format!(
                            "gives trigger '{trigger}' parameters that do not fit its parameters_schema: {}",
                            why.join("; ")
                        ),
                    );
                }
                // In st2 a sensor emits per parameters (one trigger each); squall's sensors
                // emit one stream per trigger type, so such a rule could never fire: said now.
                return refuse(
                    "parameters",
                    format!(
                        "gives parameters to trigger '{trigger}' (they fit its parameters_schema), but squall's sensors do not emit instances per trigger parameters yet, so it would never fire"
                    ),
                );
            } else if !r.rule.trigger_parameters.is_empty()
                && !PARAMETERIZED_TRIGGERS.contains(&trigger)
            {
                return refuse(
                    "parameters",
                    format!(
                        "gives parameters to trigger '{trigger}', whose instances carry none, so it would never match (only {} and sensor trigger types that declare a parameters_schema take parameters)",
                        PARAMETERIZED_TRIGGERS.join(", ")
                    ),
                );
            }
            if crate::timers::TimerSpec::is_timer_type(trigger) {
                if let Err(e) = crate::timers::TimerSpec::parse(trigger, &r.rule.trigger_parameters)
                {
                    return refuse(
                        "parameters",
                        format!("has {trigger} parameters that cannot be used: {e}"),
                    );
                }
            }
            if !actions.contains(&r.rule.action_ref) {
                return refuse(
                    "ref",
                    format!(
                        "runs action '{}', which no loaded pack provides",
                        r.rule.action_ref
                    ),
                );
            }
            if let Some(first) = refs.get(&reference) {
                problems.push(Problem::new(
                    &r.file,
                    None,
                    None,
                    format!(
                        "rule '{reference}' is also defined in {}; this file is not loaded",
                        first.display()
                    ),
                ));
                return false;
            }
            refs.insert(reference, r.file.clone());
            true
        });
    }
    check_aliases(catalog, &mut problems);
    check_workflow_actions(catalog, &actions, &mut problems);
    if let Err(errs) = catalog.rule_set() {
        for (rule_ref, msg) in errs {
            let file = catalog
                .rules()
                .find(|r| r.rule.reference() == rule_ref)
                .map(|r| r.file.clone())
                .unwrap_or_default();
            problems.push(Problem::new(
                &file,
                None,
                None,
                format!("rule '{rule_ref}': {msg}"),
            ));
        }
    }
    catalog.problems.extend(problems);
}

/// A workflow task naming an action no loaded pack provides is reported at load, at the task's
/// `action:` line, as Orquesta refuses such a workflow when it starts (an action given by an
/// expression is only known when the task runs).
fn check_workflow_actions(
    catalog: &Catalog,
    actions: &std::collections::HashSet<String>,
    problems: &mut Vec<Problem>,
) {
    for a in catalog.actions() {
        if !a.meta.runner_type.is_workflow() {
            continue;
        }
        let Some(source) = &a.source else {
            continue;
        };
        let Ok(wf) = crate::workflow::Workflow::parse_for(a.meta.runner_type, source) else {
            continue;
        };
        for (name, task) in &wf.tasks {
            let Some(action) = task.action.as_deref() else {
                continue;
            };
            if crate::workflow::expr::is_template(action) || actions.contains(action) {
                continue;
            }
            // Orquesta's `action:`, an ActionChain node's `ref:`.
            let line = source
                .lines()
                .position(|l| (l.contains("action:") || l.contains("ref:")) && l.contains(action))
                .map(|i| i + 1);
            problems.push(Problem::new(
                &a.entry_point,
                line,
                None,
                format!(
                    "task '{name}' of workflow '{}' runs action '{action}', which no loaded pack provides",
                    a.reference
                ),
            ));
        }
    }
}

/// A `parameters_schema` as st2 writes it: a full object schema, or (older packs) just the
/// mapping of properties.
fn as_object_schema(schema: &Value) -> Value {
    let is_full = schema
        .get("type")
        .is_some_and(|t| t.as_str() == Some("object"))
        || schema.get("properties").is_some();
    if is_full {
        schema.clone()
    } else {
        serde_json::json!({"type": "object", "properties": schema})
    }
}

fn read_or_empty(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    files
}

fn valid_pack_ref(r: &str) -> bool {
    !r.is_empty()
        && r.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn load_pack(dir: &Path, runtime: &RhaiRuntime, problems: &mut Vec<Problem>) -> Option<Pack> {
    let meta_file = dir.join("pack.yaml");
    let text = match std::fs::read_to_string(&meta_file) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem::new(
                &meta_file,
                None,
                None,
                format!("cannot read: {e}"),
            ));
            return None;
        }
    };
    let meta: PackMeta = match serde_yaml::from_str(&text) {
        Ok(m) => m,
        Err(e) => {
            let p = squall_rules::yaml_problem(&e);
            problems.push(Problem::new(&meta_file, p.line, p.column, p.message));
            return None;
        }
    };
    let reference = meta
        .reference
        .clone()
        .unwrap_or_else(|| meta.name.to_lowercase().replace([' ', '-'], "_"));
    if !valid_pack_ref(&reference) {
        problems.push(Problem::new(
            &meta_file,
            squall_rules::line_of(&text, "ref").or(squall_rules::line_of(&text, "name")),
            None,
            format!("pack ref {reference:?} may hold only lowercase letters, digits, '_' and '-'"),
        ));
        return None;
    }

    let mut pack = Pack {
        reference: reference.clone(),
        meta,
        dir: dir.to_path_buf(),
        actions: Vec::new(),
        rules: Vec::new(),
        aliases: Vec::new(),
        config_schema: None,
        config: serde_json::Map::new(),
        config_error: None,
        config_undeclared: Vec::new(),
        config_file: None,
        extras: BTreeMap::new(),
    };

    for file in yaml_files(&dir.join("actions")) {
        if let Some(a) = load_action(&file, &reference, dir, runtime, problems) {
            if pack.actions.iter().any(|b| b.reference == a.reference) {
                problems.push(Problem::new(
                    &file,
                    None,
                    None,
                    format!("action '{}' is defined twice", a.reference),
                ));
                continue;
            }
            pack.actions.push(a);
        }
    }
    for file in yaml_files(&dir.join("rules")) {
        if let Some(r) = load_rule(&file, &reference, problems) {
            pack.rules.push(r);
        }
    }
    for file in yaml_files(&dir.join("aliases")) {
        if let Some(a) = load_alias(&file, &reference, problems) {
            if pack.aliases.iter().any(|b| b.reference == a.reference) {
                problems.push(Problem::new(
                    &file,
                    None,
                    None,
                    format!(
                        "alias '{}' is defined twice; this file is not loaded",
                        a.reference
                    ),
                ));
                continue;
            }
            pack.aliases.push(a);
        }
    }
    let schema_file = dir.join("config.schema.yaml");
    if schema_file.is_file() {
        pack.config_schema = parse_yaml_value(&schema_file, problems);
        if let Some(schema) = &pack.config_schema {
            // A setting whose schema has a problem is reported; the others still apply.
            match config_meta(&schema_file, schema) {
                Ok((_, mut errs)) => problems.append(&mut errs),
                Err(mut errs) => {
                    problems.append(&mut errs);
                    pack.config_schema = None;
                }
            }
        }
    }
    for extra in ["sensors", "policies"] {
        for file in yaml_files(&dir.join(extra)) {
            if let Some(v) = parse_yaml_value(&file, problems) {
                pack.extras
                    .entry(extra.to_string())
                    .or_default()
                    .push((file, v));
            }
        }
    }
    Some(pack)
}

fn parse_yaml_value(file: &Path, problems: &mut Vec<Problem>) -> Option<Value> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem::new(file, None, None, format!("cannot read: {e}")));
            return None;
        }
    };
    match serde_yaml::from_str::<Value>(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            let p = squall_rules::yaml_problem(&e);
            problems.push(Problem::new(file, p.line, p.column, p.message));
            None
        }
    }
}

fn load_action(
    file: &Path,
    pack_ref: &str,
    pack_dir: &Path,
    runtime: &RhaiRuntime,
    problems: &mut Vec<Problem>,
) -> Option<LoadedAction> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem::new(file, None, None, format!("cannot read: {e}")));
            return None;
        }
    };
    let meta = match ActionMeta::from_yaml(&text) {
        Ok(m) => m,
        Err(errs) => {
            for p in errs {
                problems.push(Problem::new(file, p.line, p.column, p.message));
            }
            return None;
        }
    };
    if let Some(declared) = &meta.pack {
        if declared != pack_ref {
            problems.push(Problem::new(
                file,
                squall_rules::line_of(&text, "pack"),
                None,
                format!("action says pack '{declared}' but lives in pack '{pack_ref}'"),
            ));
            return None;
        }
    }
    let reference = meta.action_ref(pack_ref);
    let entry_point = pack_dir.join("actions").join(&meta.entry_point);
    let entry_line = squall_rules::line_of(&text, "entry_point");
    let source;
    if !meta.runner_type.has_entry_point() {
        // Nothing to read: the engine announces the parameters, runs the `cmd` one, makes
        // the HTTP request, asks the question or does nothing.
        return Some(LoadedAction {
            reference,
            pack: pack_ref.to_string(),
            meta,
            file: file.to_path_buf(),
            entry_point,
            source: None,
        });
    }
    match std::fs::read_to_string(&entry_point) {
        Err(e) => {
            problems.push(Problem::new(
                file,
                entry_line,
                None,
                format!("entry_point {}: {e}", entry_point.display()),
            ));
            return None;
        }
        Ok(script) => match meta.runner_type {
            RunnerType::Rhai => {
                if let Err(e) = runtime.check_syntax(&script) {
                    problems.push(Problem::new(
                        &entry_point,
                        e.line,
                        e.column,
                        e.message.clone(),
                    ));
                    return None;
                }
                source = Some(Arc::from(script.as_str()));
            }
            RunnerType::Announcement
            | RunnerType::LocalShellCmd
            | RunnerType::HttpRequest
            | RunnerType::Noop
            | RunnerType::Inquirer => source = None,
            // The script runs as a process: `source` carries its path, checked now. A Python
            // action's file is checked when it runs (its interpreter reports a syntax error).
            RunnerType::LocalShellScript | RunnerType::PythonScript => {
                let _ = script;
                source = Some(Arc::from(entry_point.to_string_lossy().as_ref()));
            }
            RunnerType::Workflow | RunnerType::ActionChain => {
                // Orquesta's language (or an ActionChain), checked now so a broken workflow is
                // reported at load.
                if let Err(errs) = crate::workflow::Workflow::parse_for(meta.runner_type, &script) {
                    for p in errs {
                        problems.push(Problem::new(&entry_point, p.line, p.column, p.message));
                    }
                    return None;
                }
                source = Some(Arc::from(script.as_str()));
            }
        },
    }
    Some(LoadedAction {
        reference,
        pack: pack_ref.to_string(),
        meta,
        file: file.to_path_buf(),
        entry_point,
        source,
    })
}

fn load_alias(file: &Path, pack_ref: &str, problems: &mut Vec<Problem>) -> Option<LoadedAlias> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem::new(file, None, None, format!("cannot read: {e}")));
            return None;
        }
    };
    match Alias::from_yaml(&text) {
        Ok(alias) => {
            if let Some(declared) = alias.pack.as_deref().filter(|p| *p != pack_ref) {
                problems.push(Problem::new(
                    file,
                    squall_rules::line_of(&text, "pack"),
                    None,
                    format!("alias says pack '{declared}' but lives in pack '{pack_ref}'"),
                ));
                return None;
            }
            Some(LoadedAlias {
                reference: alias.reference(pack_ref),
                alias,
                file: file.to_path_buf(),
            })
        }
        Err(errs) => {
            for p in errs {
                problems.push(Problem::new(file, p.line, p.column, p.message));
            }
            None
        }
    }
}

/// Leaves out, and reports, an alias whose action no loaded pack provides or whose formats
/// name a parameter the action does not declare (st2 would refuse the execution it requests).
fn check_aliases(catalog: &mut Catalog, problems: &mut Vec<Problem>) {
    let declared: HashMap<String, Vec<String>> = catalog
        .actions()
        .map(|a| {
            let names = a.meta.parameters.keys().cloned().collect();
            (a.reference.clone(), names)
        })
        .collect();
    for pack in &mut catalog.packs {
        pack.aliases.retain(|a| {
            let text = read_or_empty(&a.file);
            let Some(params) = declared.get(&a.alias.action_ref) else {
                problems.push(Problem::new(
                    &a.file,
                    squall_rules::line_of(&text, "action_ref"),
                    None,
                    format!(
                        "alias '{}' runs action '{}', which no loaded pack provides; the alias is not loaded",
                        a.reference, a.alias.action_ref
                    ),
                ));
                return false;
            };
            for (_, representation) in a.alias.patterns() {
                for name in squall_rules::format_parameter_names(representation) {
                    if !params.contains(&name) {
                        let line = text
                            .lines()
                            .position(|l| !representation.is_empty() && l.contains(representation))
                            .map(|i| i + 1)
                            .or_else(|| squall_rules::line_of(&text, "formats"));
                        problems.push(Problem::new(
                            &a.file,
                            line,
                            None,
                            format!(
                                "alias '{}': format {representation:?} names parameter '{name}', which action '{}' does not declare; the alias is not loaded",
                                a.reference, a.alias.action_ref
                            ),
                        ));
                        return false;
                    }
                }
            }
            true
        });
    }
}

fn load_rule(file: &Path, pack_ref: &str, problems: &mut Vec<Problem>) -> Option<LoadedRule> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem::new(file, None, None, format!("cannot read: {e}")));
            return None;
        }
    };
    match Rule::from_yaml(&text) {
        Ok(mut rule) => {
            // A rule without `pack:` is in st2's "default" pack until placed in this one.
            if rule.pack != pack_ref && rule.pack != "default" {
                problems.push(Problem::new(
                    file,
                    squall_rules::line_of(&text, "pack"),
                    None,
                    format!(
                        "rule says pack '{}' but lives in pack '{pack_ref}'",
                        rule.pack
                    ),
                ));
                return None;
            }
            rule.pack = pack_ref.to_string();
            Some(LoadedRule {
                rule,
                file: file.to_path_buf(),
            })
        }
        Err(errs) => {
            for p in errs {
                problems.push(Problem::new(file, p.line, p.column, p.message));
            }
            None
        }
    }
}
