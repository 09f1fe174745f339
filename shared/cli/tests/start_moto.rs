//! `dmarc-tsv start` against moto's Step Functions (executing for real: Pass/Succeed/Fail states,
//! as moto cannot run Lambda code) and CloudFormation (the stack output naming the machine).

#[path = "../../aws/tests/support/moto.rs"]
mod moto;

use std::process::{Command, Output};

use dmarc_tsv_aws::aws_sdk_cloudformation as cfn;
use dmarc_tsv_aws::aws_sdk_sfn as sfn;
use moto::MotoServer;
use tokio::runtime::Runtime;

const BIN: &str = env!("CARGO_BIN_EXE_dmarc-tsv");
const ROLE: &str = "arn:aws:iam::123456789012:role/dmarc-tsv-states";

/// The shape of the deployed machine's `Result` state (infra/lib/workflow.ts), from a Pass state.
const SUCCEEDING: &str = r#"{
  "StartAt": "Ingest",
  "States": {
    "Ingest": {
      "Type": "Pass",
      "Result": {"mails": 3, "reports": 4, "rows": 10, "quarantined": 1, "ignored": 1,
                 "files": 1, "outputRows": 9, "duplicates": 1, "moved": 2, "ingestRounds": 1},
      "Next": "Done"
    },
    "Done": {"Type": "Succeed"}
  }
}"#;

const FAILING: &str = r#"{
  "StartAt": "Ingest",
  "States": {
    "Ingest": {"Type": "Pass", "Next": "Broken"},
    "Broken": {"Type": "Fail", "Error": "Transient", "Cause": "ingest kept failing: SlowDown"}
  }
}"#;

struct Sfn {
    rt: Runtime,
    sfn: sfn::Client,
    cfn: cfn::Client,
}

impl Sfn {
    fn new(moto: &MotoServer) -> Sfn {
        moto.enable_stepfunctions_execution();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let sfn_config = sfn::Config::builder()
            .behavior_version(sfn::config::BehaviorVersion::latest())
            .region(sfn::config::Region::new("us-east-1"))
            .credentials_provider(sfn::config::Credentials::new(
                "test", "test", None, None, "t",
            ))
            .endpoint_url(moto.endpoint())
            .build();
        let cfn_config = cfn::Config::builder()
            .behavior_version(cfn::config::BehaviorVersion::latest())
            .region(cfn::config::Region::new("us-east-1"))
            .credentials_provider(cfn::config::Credentials::new(
                "test", "test", None, None, "t",
            ))
            .endpoint_url(moto.endpoint())
            .build();
        Sfn {
            rt,
            sfn: sfn::Client::from_conf(sfn_config),
            cfn: cfn::Client::from_conf(cfn_config),
        }
    }

    fn machine(&self, name: &str, definition: &str) -> String {
        let created = self.rt.block_on(
            self.sfn
                .create_state_machine()
                .name(name)
                .definition(definition)
                .role_arn(ROLE)
                .send(),
        );
        created
            .unwrap_or_else(|e| panic!("create state machine: {e:?}"))
            .state_machine_arn
    }

    /// A stack whose only purpose here is its `StateMachineArn` output.
    fn stack(&self, name: &str, machine_arn: &str) {
        let template = serde_json::json!({
            "Resources": {"Marker": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": format!("{name}-marker")}}},
            "Outputs": {"StateMachineArn": {"Value": machine_arn}}
        });
        self.rt
            .block_on(
                self.cfn
                    .create_stack()
                    .stack_name(name)
                    .template_body(template.to_string())
                    .send(),
            )
            .unwrap_or_else(|e| panic!("create stack: {e:?}"));
    }

    fn executions(&self, machine_arn: &str) -> usize {
        let listed = self.rt.block_on(
            self.sfn
                .list_executions()
                .state_machine_arn(machine_arn)
                .send(),
        );
        listed.expect("list executions").executions().len()
    }
}

fn start(moto: &MotoServer, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("start")
        .args(["--interval", "1", "--timeout", "120"])
        .args(args)
        .envs(moto.env())
        .env_remove("DMARC_STATEMACHINE")
        .env_remove("DMARC_STACK")
        .env_remove("DMARC_REGION")
        .output()
        .expect("spawn dmarc-tsv start")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn start_follows_a_succeeding_execution_and_prints_its_summary() {
    let moto = MotoServer::start();
    let aws = Sfn::new(&moto);
    let arn = aws.machine("dmarc-ok", SUCCEEDING);
    let output = start(&moto, &["--statemachine", &arn]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:{stdout}\nstderr:{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&stdout).expect("stdout is the output JSON");
    assert_eq!(summary["rows"], 10);
    assert_eq!(summary["quarantined"], 1);
    assert!(stderr.contains("SUCCEEDED"), "{stderr}");
    assert!(
        stderr.contains("mails=3 reports=4 rows=10 outputRows=9 files=1 duplicates=1 quarantined=1 moved=2 ignored=1"),
        "{stderr}"
    );
    assert_eq!(aws.executions(&arn), 1);
}

#[test]
fn start_exits_non_zero_with_the_cause_of_a_failed_execution() {
    let moto = MotoServer::start();
    let aws = Sfn::new(&moto);
    let arn = aws.machine("dmarc-broken", FAILING);
    let output = start(&moto, &["--statemachine", &arn]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FAILED"), "{stderr}");
    assert!(stderr.contains("error: Transient"), "{stderr}");
    assert!(
        stderr.contains("cause: ingest kept failing: SlowDown"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "no summary for a failed run");
}

#[test]
fn start_finds_the_state_machine_from_the_stack_outputs() {
    let moto = MotoServer::start();
    let aws = Sfn::new(&moto);
    let arn = aws.machine("dmarc-stacked", SUCCEEDING);
    aws.stack("DmarcTsvTest", &arn);
    let output = start(&moto, &["--stack", "DmarcTsvTest"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\nmoto log:\n{}",
        text(&output.stderr),
        moto.log_tail()
    );
    assert_eq!(
        aws.executions(&arn),
        1,
        "started the machine named by the stack"
    );
}

/// moto 5.2 executes only the first StartExecution of a server (later ones fail deep-copying
/// the first execution), so each start gets its own moto.
#[test]
fn start_takes_the_state_machine_from_dmarc_statemachine_and_can_skip_following() {
    let moto = MotoServer::start();
    let aws = Sfn::new(&moto);
    let by_env = aws.machine("dmarc-by-env", SUCCEEDING);
    let output = Command::new(BIN)
        .args(["start", "--no-wait"])
        .envs(moto.env())
        .env("DMARC_STATEMACHINE", &by_env)
        .output()
        .expect("spawn");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.trim().starts_with("arn:aws:states:"), "{stdout}");
    assert!(stdout.contains(":cli-"), "default execution name: {stdout}");
    assert_eq!(
        aws.executions(&by_env),
        1,
        "DMARC_STATEMACHINE names the machine"
    );
}

#[test]
fn start_fails_clearly_without_a_deployed_stack_or_with_bad_input() {
    let moto = MotoServer::start();
    let output = start(&moto, &["--stack", "NotDeployed"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("NotDeployed"), "{stderr}");

    let output = start(&moto, &["--statemachine", "arn:x", "--input", "{not json"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let output = start(&moto, &["--no-such-flag"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
}
