//! squall-rules: StackStorm rules for squall. Loads st2 rule files unchanged, matches trigger
//! instances against them with every st2 criteria operator, and renders the action each match
//! requests; follows rules over several instances (`correlate`: all, sequence, any, absence,
//! within a window, per group); matches ChatOps commands against action aliases (`alias`). st2's expression
//! functions (`st2fn`) serve rules' Jinja and, through the engine, workflows' Jinja and YAQL.
//!
//! Pure: no I/O, no tokio, no clock. Input is rule text and trigger instances; output is what to
//! run. The engine owns storage, time and the key-value store (reached via [`KeyValueLookup`]).

pub mod alias;
pub mod correlate;
pub mod lookup;
pub mod matcher;
pub mod model;
pub mod operators;
pub mod st2fn;
pub mod template;

pub use alias::{
    extract_parameters, format_parameter_names, match_command, Ack, Alias, AliasFormat, AliasIndex,
    AliasMatch, AliasMatchError, AliasParameters, Allow, ParseError, ResultOptions,
};
pub use correlate::{
    Correlation, CorrelationMode, CorrelationState, FedInstance, MatchedEvent, OpenGroup, Outcome,
    Part, PartSet,
};
pub use lookup::KeyPath;
pub use matcher::{
    canonical_trigger_ref, ActionRequest, CriterionFailure, EvalEnv, Evaluation, NoMatch, RuleId,
    RuleSet, ThrottleState, TriggerInstanceView,
};
pub use model::{
    line_of, parse_duration, yaml_problem, Criterion, Rule, RuleType, SourceProblem, Tag, Throttle,
};
pub use operators::Operator;
pub use template::{KeyValueLookup, NoKeyValues};
