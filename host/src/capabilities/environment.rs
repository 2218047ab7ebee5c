//! `assessment:plugin/environment` (grant `env`): named environment
//! variables of the agent's process, nothing else of its environment.

use crate::bindings::latest::assessment::plugin::environment;
use crate::bindings::latest::assessment::plugin::types::AccessError;

use super::PluginState;

impl environment::Host for PluginState {
    async fn env_var(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Option<String>, AccessError>> {
        if let Err(refusal) = self.target.grants.check_env(&name) {
            return Ok(Err(self.refuse("env-var", refusal)));
        }
        let value = std::env::var_os(&name).map(|v| v.to_string_lossy().into_owned());
        // The name and whether it was set, never the value.
        self.provenance.environment(&name, value.is_some());
        Ok(Ok(value))
    }
}
