//! Quotas (`/mgmt/quotas/{project}`) and the absolute limits of `GET /limits`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::ApiService;
use crate::error::{Error, Result};
use crate::model::{QuotaLimits, QuotaUsage, Resource};
use crate::policy::{rules, Target};
use crate::ports::RequestContext;

/// Quota of a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaView {
    /// Limits.
    pub limits: QuotaLimits,
    /// Usage.
    pub usage: QuotaUsage,
}

impl ApiService {
    async fn quota_view(&self, tenant: &str) -> Result<QuotaView> {
        Ok(QuotaView {
            limits: self.store.get_quota_limits(tenant).await?,
            usage: self.store.quota_usage(tenant).await?,
        })
    }

    /// `GET /mgmt/quotas/{project}`: an owner may read their own; admins any (the rule's target is the project
    /// asked for).
    pub async fn show_quota(&self, ctx: &RequestContext, project_id: &str) -> Result<QuotaView> {
        self.authorize(ctx, rules::MGMT_QUOTA_SHOW, &Target::project(project_id))?;
        self.quota_view(project_id).await
    }

    /// `PUT /mgmt/quotas/{project}` (admin): resource name → limit (−1 unlimited; below −1 is 400; unknown
    /// resource 404). Answers the new limits.
    pub async fn update_quota(
        &self,
        ctx: &RequestContext,
        project_id: &str,
        limits: BTreeMap<String, i64>,
    ) -> Result<QuotaLimits> {
        self.authorize_on_tenant(ctx, rules::MGMT_QUOTA_UPDATE)?;
        let mut current = self.store.get_quota_limits(project_id).await?;
        for (name, v) in limits {
            let r = Resource::parse(&name)
                .ok_or_else(|| Error::not_found("Quota resource", name.clone()))?;
            if v < -1 {
                return Err(Error::bad_request(format!(
                    "Quota limit {v} for {name} is below -1."
                )));
            }
            current.set(r, v);
        }
        self.store.set_quota_limits(project_id, &current).await?;
        Ok(current)
    }

    /// `GET /limits`: the absolute limits of the caller's tenant (rate limits are the HTTP layer's).
    pub async fn limits(&self, ctx: &RequestContext) -> Result<QuotaView> {
        self.authorize_on_tenant(ctx, rules::LIMITS_INDEX)?;
        self.quota_view(&ctx.tenant_id).await
    }
}
