/** Image references in skopeo transport syntax, docker name normalisation, thin.json origins. */
import t from 'tap';
import { resolve } from 'node:path';
import { formatDockerName, formatOrigin, parseDockerReference, parseImageReference } from '../../src/image/reference';
import { throwsCode } from '../helpers/asserts';

const D = `sha256:${'ab'.repeat(32)}` as const;

t.test('local transports', async (t) => {
  t.same(parseImageReference('oci:/x/layout'), { transport: 'oci', path: '/x/layout' });
  t.same(parseImageReference('oci:/x/layout:v1.2'), { transport: 'oci', path: '/x/layout', tag: 'v1.2' });
  t.same(parseImageReference('oci-archive:img.tar:latest'), { transport: 'oci-archive', path: 'img.tar', tag: 'latest' });
  t.same(parseImageReference('docker-archive:/a.tar'), { transport: 'docker-archive', path: '/a.tar' });
  t.same(parseImageReference('docker-archive:/a.tar:@2'), { transport: 'docker-archive', path: '/a.tar', select: { index: 2 } });
  t.same(parseImageReference('docker-archive:/a.tar:busybox:1.36'), { transport: 'docker-archive', path: '/a.tar', select: { name: 'busybox:1.36' } });
  throwsCode(t, () => parseImageReference('oci::tag'), 'E_USAGE', 'empty path');
  throwsCode(t, () => parseImageReference('oci:/x:'), 'E_USAGE', 'empty tag');
  throwsCode(t, () => parseImageReference('docker-archive:/a.tar:@x'), 'E_USAGE', 'bad index');
  throwsCode(t, () => parseImageReference('/just/a/path'), 'E_USAGE', 'no transport');
  throwsCode(t, () => parseImageReference('ftp://x/y'), 'E_USAGE', 'unknown transport');
});

t.test('docker names are normalised as docker does', async (t) => {
  t.same(parseImageReference('docker://alpine'), { transport: 'docker', registry: 'registry-1.docker.io', repository: 'library/alpine', tag: 'latest' });
  t.same(parseImageReference('docker://user/app:1'), { transport: 'docker', registry: 'registry-1.docker.io', repository: 'user/app', tag: '1' });
  t.same(parseImageReference('docker://docker.io/alpine:3'), { transport: 'docker', registry: 'registry-1.docker.io', repository: 'library/alpine', tag: '3' });
  t.same(parseImageReference('docker://127.0.0.1:5000/a/b/c:t'), { transport: 'docker', registry: '127.0.0.1:5000', repository: 'a/b/c', tag: 't' });
  t.same(parseImageReference('docker://localhost/x'), { transport: 'docker', registry: 'localhost', repository: 'x', tag: 'latest' });
  t.same(parseImageReference(`docker://ghcr.io/o/r@${D}`), { transport: 'docker', registry: 'ghcr.io', repository: 'o/r', digest: D });
  t.same(parseImageReference(`docker://ghcr.io/o/r:v1@${D}`), { transport: 'docker', registry: 'ghcr.io', repository: 'o/r', tag: 'v1', digest: D });
  t.same(parseDockerReference('registry.example:5000/ns/img'), { transport: 'docker', registry: 'registry.example:5000', repository: 'ns/img', tag: 'latest' });
  throwsCode(t, () => parseImageReference('docker:alpine'), 'E_USAGE', 'docker without //');
  throwsCode(t, () => parseImageReference('docker://Alpine'), 'E_USAGE', 'upper case name');
  throwsCode(t, () => parseImageReference('docker://a/b:bad tag'), 'E_USAGE', 'bad tag');
  throwsCode(t, () => parseImageReference('docker://a/b@sha256:123'), 'E_USAGE', 'bad digest');
  throwsCode(t, () => parseImageReference('docker://host.example/../x'), 'E_USAGE', 'dot-dot component');
});

t.test('origins for thin.json', async (t) => {
  t.equal(formatOrigin(parseImageReference('docker://alpine:3.19')), 'docker://registry-1.docker.io/library/alpine:3.19');
  t.equal(formatOrigin(parseImageReference('docker://alpine:3.19'), D), `docker://registry-1.docker.io/library/alpine:3.19@${D}`);
  t.equal(formatOrigin(parseImageReference(`docker://h:1/a@${D}`), `sha256:${'cd'.repeat(32)}`), `docker://h:1/a@${D}`, 'a pinned digest stays');
  t.equal(formatOrigin(parseImageReference('oci:rel/dir:v1')), `oci:${resolve('rel/dir')}:v1`);
  t.equal(formatOrigin(parseImageReference('docker-archive:a.tar'), D), `docker-archive:${resolve('a.tar')}`);
  t.equal(formatDockerName(parseDockerReference('h:5000/a:t')), 'h:5000/a:t');
});
