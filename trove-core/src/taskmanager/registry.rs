//! Workflow kinds as types, and the registry that maps a kind to its implementation.
//!
//! A workflow is a type implementing [`WorkflowDef`]: its typed parameters ([`WorkflowDef::Params`], which name
//! the kind), the task its instance shows when it fails, its steps ([`WorkflowDef::run`], written against a
//! [`StepContext`]) and, optionally, how to undo them ([`WorkflowDef::compensate`]). A [`Registry`] maps kinds to
//! workflows; the engine that claims, leases, journals and resumes workflows knows none of them by name.
//!
//! Adding a workflow is one new file: its parameters, its `WorkflowDef` impl, and (for the crash harness of
//! [`crate::testing::crash`]) a scenario; then one `register` line in [`Registry::standard`] (or in an
//! embedder's own registry).

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::context::{Failure, StepContext, StepResult, Stop};
use crate::model::{Workflow, WorkflowKind, WorkflowParams};
use crate::state::TaskStatus;

/// One kind of workflow (see the module docs).
#[async_trait]
pub trait WorkflowDef: Send + Sync + 'static {
    /// The workflow's parameters; their [`WorkflowParams::KIND`] is the workflow's kind.
    type Params: WorkflowParams;

    /// The task an instance shows when this workflow fails without naming one (`None`: the task is left as it
    /// is).
    fn error_task(&self) -> Option<TaskStatus>;

    /// The steps. A run that returns `Ok` must have closed the workflow with [`StepContext::finish`].
    async fn run(&self, cx: &mut StepContext<'_>, params: &Self::Params) -> StepResult<()>;

    /// Undoes what the steps did after `failure` (journaled steps too: a worker that dies while compensating
    /// leaves the workflow rolling back, and the next one calls `compensate` again with the same failure).
    /// Answers the failure to record, which may say what was undone. By default nothing is undone.
    async fn compensate(
        &self,
        cx: &mut StepContext<'_>,
        params: &Self::Params,
        failure: Failure,
    ) -> StepResult<Failure> {
        let _ = (cx, params);
        Ok(failure)
    }

    /// How the generic crash harness exercises this workflow ([`crate::testing::crash`]). Every registered
    /// workflow must have at least one scenario: the harness fails for a kind without.
    #[cfg(any(test, feature = "testing"))]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario>;
}

/// The object-safe face of a [`WorkflowDef`], as the engine holds it.
#[async_trait]
pub(crate) trait DynWorkflow: Send + Sync + 'static {
    fn error_task(&self) -> Option<TaskStatus>;
    async fn run(&self, cx: &mut StepContext<'_>) -> StepResult<()>;
    async fn compensate(&self, cx: &mut StepContext<'_>, failure: Failure) -> StepResult<Failure>;
    fn scrub(&self, wf: &mut Workflow);
    #[cfg(any(test, feature = "testing"))]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario>;
}

struct Typed<W>(W);

fn params_of<P: WorkflowParams>(wf: &Workflow) -> StepResult<P> {
    wf.params::<P>().map_err(|e| {
        Stop::Fail(Failure::new(
            "The workflow's parameters are unreadable by this task manager.",
            &e,
        ))
    })
}

#[async_trait]
impl<W: WorkflowDef> DynWorkflow for Typed<W> {
    fn error_task(&self) -> Option<TaskStatus> {
        self.0.error_task()
    }
    async fn run(&self, cx: &mut StepContext<'_>) -> StepResult<()> {
        let p: W::Params = params_of(&cx.wf)?;
        self.0.run(cx, &p).await
    }
    async fn compensate(&self, cx: &mut StepContext<'_>, failure: Failure) -> StepResult<Failure> {
        match params_of::<W::Params>(&cx.wf) {
            Ok(p) => self.0.compensate(cx, &p, failure).await,
            // Nothing can be undone without the parameters: record the failure as it is.
            Err(_) => Ok(failure),
        }
    }
    fn scrub(&self, wf: &mut Workflow) {
        if let Ok(mut p) = wf.params::<W::Params>() {
            p.scrub();
            if let Err(e) = wf.set_params(&p) {
                tracing::warn!(workflow = %wf.id, error = %e, "could not scrub workflow parameters");
            }
        }
    }
    #[cfg(any(test, feature = "testing"))]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        self.0.crash_scenarios()
    }
}

/// Maps workflow kinds to their implementations.
#[derive(Clone, Default)]
pub struct Registry {
    defs: BTreeMap<WorkflowKind, Arc<dyn DynWorkflow>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.defs.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Every workflow this crate ships.
    pub fn standard() -> Registry {
        super::workflows::register_standard(Registry::new())
    }

    /// Adds (or replaces) the workflow of `W::Params::KIND`.
    pub fn register<W: WorkflowDef>(mut self, workflow: W) -> Registry {
        self.defs.insert(W::Params::KIND, Arc::new(Typed(workflow)));
        self
    }

    /// The kinds registered, in name order.
    pub fn kinds(&self) -> Vec<WorkflowKind> {
        self.defs.keys().cloned().collect()
    }

    /// Whether `kind` is registered.
    pub fn contains(&self, kind: &WorkflowKind) -> bool {
        self.defs.contains_key(kind)
    }

    pub(crate) fn get(&self, kind: &WorkflowKind) -> Option<&Arc<dyn DynWorkflow>> {
        self.defs.get(kind)
    }

    /// Forgets the secrets in a workflow's parameters (as its kind defines them); unknown kinds are left alone.
    pub fn scrub(&self, wf: &mut Workflow) {
        if let Some(d) = self.defs.get(&wf.kind) {
            d.scrub(wf);
        }
    }

    /// The crash scenarios of `kind` (empty for an unknown kind or one without scenarios).
    #[cfg(any(test, feature = "testing"))]
    pub fn crash_scenarios(&self, kind: &WorkflowKind) -> Vec<crate::testing::crash::Scenario> {
        self.defs
            .get(kind)
            .map(|d| d.crash_scenarios())
            .unwrap_or_default()
    }
}
