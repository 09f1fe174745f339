/**
 * SES receiving: a receipt rule for the configured recipients whose S3 action writes raw mail to the
 * incoming prefix. Either a new rule set (optionally activated) or a rule added to an existing rule set.
 * The bucket policy is written here (not by the CDK S3 action) so it can pin aws:SourceArn to this rule.
 */
import { ArnFormat, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as ses from 'aws-cdk-lib/aws-ses';
import * as cr from 'aws-cdk-lib/custom-resources';
import { Construct } from 'constructs';
import { DmarcTsvConfig } from './config';

export interface ReceivingProps {
  readonly config: DmarcTsvConfig;
  readonly bucket: s3.Bucket;
  /** The data bucket's key: SES writes objects encrypted with it (bucket default encryption). */
  readonly key?: kms.Key;
}

/** Writes the mail to S3 under a prefix; permissions are granted by `Receiving`, not here. */
class S3MailAction implements ses.IReceiptRuleAction {
  constructor(
    private readonly bucket: s3.IBucket,
    private readonly prefix: string,
  ) {}

  bind(): ses.ReceiptRuleActionConfig {
    return { s3Action: { bucketName: this.bucket.bucketName, objectKeyPrefix: this.prefix } };
  }
}

export class Receiving extends Construct {
  readonly ruleSetName: string;
  readonly ruleName: string;
  readonly rule: ses.ReceiptRule;

  constructor(scope: Construct, id: string, props: ReceivingProps) {
    super(scope, id);
    const { config, bucket, key } = props;
    const ruleSet = config.existingRuleSetName
      ? ses.ReceiptRuleSet.fromReceiptRuleSetName(this, 'RuleSet', config.existingRuleSetName)
      : new ses.ReceiptRuleSet(this, 'RuleSet', { receiptRuleSetName: config.ruleSetName });
    this.ruleSetName = config.existingRuleSetName ?? config.ruleSetName;
    this.ruleName = config.ruleName;

    const sourceArn = Stack.of(this).formatArn({
      service: 'ses',
      resource: 'receipt-rule-set',
      resourceName: `${this.ruleSetName}:receipt-rule/${this.ruleName}`,
      arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
    });
    const onlyThisRule = {
      StringEquals: { 'aws:SourceAccount': Stack.of(this).account },
      ArnLike: { 'aws:SourceArn': sourceArn },
    };
    const put = bucket.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'AllowSesReceiptRulePut',
        principals: [new iam.ServicePrincipal('ses.amazonaws.com')],
        actions: ['s3:PutObject'],
        resources: [bucket.arnForObjects(`${config.prefixes.incoming}*`)],
        conditions: onlyThisRule,
      }),
    );
    // SES's PutObject into the SSE-KMS bucket makes S3 ask KMS for a data key on SES's behalf. Only through
    // S3 in this region: the bucket policy above already pins account and rule. (Not aws:SourceArn here:
    // whether it reaches KMS on such forwarded calls is undocumented, and a mismatch would bounce mail.)
    key?.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'AllowSesToEncryptIncomingMail',
        principals: [new iam.ServicePrincipal('ses.amazonaws.com')],
        actions: ['kms:GenerateDataKey*', 'kms:Encrypt'],
        resources: ['*'],
        conditions: { StringEquals: { 'kms:ViaService': `s3.${Stack.of(this).region}.amazonaws.com` } },
      }),
    );

    this.rule = new ses.ReceiptRule(this, 'Rule', {
      ruleSet,
      receiptRuleName: this.ruleName,
      recipients: config.recipients,
      scanEnabled: true,
      tlsPolicy: config.requireTls ? ses.TlsPolicy.REQUIRE : ses.TlsPolicy.OPTIONAL,
      actions: [new S3MailAction(bucket, config.prefixes.incoming)],
    });
    // SES writes a setup-notification object when the rule is created: the policy must exist first.
    if (put.policyDependable) this.rule.node.addDependency(put.policyDependable);
    if (key) this.rule.node.addDependency(key);

    if (config.activateRuleSet && !config.existingRuleSetName) this.activate();
  }

  /** Only one rule set is active per account and region: activating replaces the current one (opt-in). */
  private activate(): void {
    const call = (ruleSetName?: string): cr.AwsSdkCall => ({
      service: 'SES',
      action: 'setActiveReceiptRuleSet',
      parameters: ruleSetName === undefined ? {} : { RuleSetName: ruleSetName },
      physicalResourceId: cr.PhysicalResourceId.of(`active-receipt-rule-set-${this.ruleSetName}`),
    });
    const activation = new cr.AwsCustomResource(this, 'ActivateRuleSet', {
      onCreate: call(this.ruleSetName),
      onUpdate: call(this.ruleSetName),
      // Deactivate on delete, else the account keeps an active rule set pointing at a deleted one.
      onDelete: call(undefined),
      policy: cr.AwsCustomResourcePolicy.fromStatements([
        // SetActiveReceiptRuleSet has no resource-level permissions: it only accepts Resource "*".
        new iam.PolicyStatement({ actions: ['ses:SetActiveReceiptRuleSet'], resources: ['*'] }),
      ]),
      installLatestAwsSdk: false,
    });
    activation.node.addDependency(this.rule);
  }
}
