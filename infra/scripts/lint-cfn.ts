/**
 * cfn-lint on the synthesized template (offline; cfn-lint comes from the repo's .venv, see
 * scripts/requirements-test.txt). `npm run lint:cfn` in infra/. Exit status = cfn-lint's.
 */
import { lintTemplate } from '../lib/cfn-lint';

const result = lintTemplate({
  recipients: 'dmarc@example.com',
  activateRuleSet: true,
  alarmEmail: 'ops@example.com',
});
process.stdout.write(result.output);
process.exit(result.status);
