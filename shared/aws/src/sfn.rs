//! [`SfnClient`]: starting and following an execution of the deployed state machine, and finding
//! its ARN in the CloudFormation stack outputs. Used by `dmarc-tsv start`; async (the CLI drives it
//! from its own runtime), since no core code is involved.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sfn::types::ExecutionStatus;

use crate::classify::{Retry, classify};

/// The stack output holding the state machine ARN (written by the CDK stack).
pub const STATE_MACHINE_OUTPUT_KEY: &str = "StateMachineArn";

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("transient AWS error: {0}")]
    Transient(String),
    #[error("AWS error: {0}")]
    Permanent(String),
}

impl AwsError {
    pub fn is_transient(&self) -> bool {
        matches!(self, AwsError::Transient(_))
    }
}

/// Where an execution is, as the CLI needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionState {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Aborted,
    /// `PENDING_REDRIVE` or a status this SDK does not know yet: not finished.
    Other,
}

impl ExecutionState {
    pub fn is_finished(self) -> bool {
        !matches!(self, ExecutionState::Running | ExecutionState::Other)
    }

    fn from_sdk(status: &ExecutionStatus) -> Self {
        match status.as_str() {
            "RUNNING" => ExecutionState::Running,
            "SUCCEEDED" => ExecutionState::Succeeded,
            "FAILED" => ExecutionState::Failed,
            "TIMED_OUT" => ExecutionState::TimedOut,
            "ABORTED" => ExecutionState::Aborted,
            _ => ExecutionState::Other,
        }
    }
}

/// One `DescribeExecution` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionReport {
    pub arn: String,
    pub state: ExecutionState,
    /// The raw status string (`SUCCEEDED`, `FAILED`…), for messages.
    pub status: String,
    /// The execution output JSON when it succeeded.
    pub output: Option<String>,
    pub error: Option<String>,
    pub cause: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SfnClient {
    sfn: aws_sdk_sfn::Client,
    cloudformation: aws_sdk_cloudformation::Client,
}

impl SfnClient {
    pub async fn connect(region: Option<&str>) -> Self {
        SfnClient {
            sfn: crate::config::sfn_client(region).await,
            cloudformation: crate::config::cloudformation_client(region).await,
        }
    }

    pub fn new(sfn: aws_sdk_sfn::Client, cloudformation: aws_sdk_cloudformation::Client) -> Self {
        SfnClient {
            sfn,
            cloudformation,
        }
    }

    /// The `StateMachineArn` output of `stack`.
    pub async fn state_machine_from_stack(&self, stack: &str) -> Result<String, AwsError> {
        let output = self
            .cloudformation
            .describe_stacks()
            .stack_name(stack)
            .send()
            .await
            .map_err(|err| aws_error(&format!("DescribeStacks {stack}"), &err))?;
        output
            .stacks()
            .iter()
            .flat_map(|s| s.outputs())
            .find(|o| o.output_key() == Some(STATE_MACHINE_OUTPUT_KEY))
            .and_then(|o| o.output_value())
            .map(str::to_owned)
            .ok_or_else(|| {
                AwsError::Permanent(format!(
                    "stack {stack} has no {STATE_MACHINE_OUTPUT_KEY} output (is it deployed?)"
                ))
            })
    }

    /// Starts an execution with `input` (JSON); returns the execution ARN.
    pub async fn start(
        &self,
        state_machine: &str,
        name: Option<&str>,
        input: &str,
    ) -> Result<String, AwsError> {
        let output = self
            .sfn
            .start_execution()
            .state_machine_arn(state_machine)
            .set_name(name.map(str::to_owned))
            .input(input)
            .send()
            .await
            .map_err(|err| aws_error(&format!("StartExecution {state_machine}"), &err))?;
        Ok(output.execution_arn().to_owned())
    }

    pub async fn describe(&self, execution: &str) -> Result<ExecutionReport, AwsError> {
        let output = self
            .sfn
            .describe_execution()
            .execution_arn(execution)
            .send()
            .await
            .map_err(|err| aws_error(&format!("DescribeExecution {execution}"), &err))?;
        Ok(ExecutionReport {
            arn: output.execution_arn().to_owned(),
            state: ExecutionState::from_sdk(output.status()),
            status: output.status().as_str().to_owned(),
            output: output.output().map(str::to_owned),
            error: output.error().map(str::to_owned),
            cause: output.cause().map(str::to_owned),
        })
    }
}

fn aws_error<E>(op: &str, err: &SdkError<E>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (retry, detail) = classify(err);
    let message = format!("{op}: {detail}");
    match retry {
        Retry::Transient => AwsError::Transient(message),
        Retry::Permanent => AwsError::Permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_terminal_statuses_are_finished() {
        let cases = [
            ("RUNNING", ExecutionState::Running, false),
            ("SUCCEEDED", ExecutionState::Succeeded, true),
            ("FAILED", ExecutionState::Failed, true),
            ("TIMED_OUT", ExecutionState::TimedOut, true),
            ("ABORTED", ExecutionState::Aborted, true),
            ("PENDING_REDRIVE", ExecutionState::Other, false),
        ];
        for (status, state, finished) in cases {
            let parsed = ExecutionState::from_sdk(&ExecutionStatus::from(status));
            assert_eq!(parsed, state, "{status}");
            assert_eq!(parsed.is_finished(), finished, "{status}");
        }
    }
}
