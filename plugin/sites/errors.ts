import { VmdrError } from '../../hypervisors/errors.js';

/** The peer site's endpoint could not be reached or cut the connection (Node's socket codes). */
export class PeerUnreachable extends VmdrError {
  constructor(url: string, site: string, detail: string, cause?: unknown) {
    super('PEER_UNREACHABLE', `cannot reach the endpoint of site "${site}" at ${url}: ${detail}`, {
      subject: { host: url, site },
      cause,
      remedy: `is \`vmdr serve\` running on site "${site}"?`,
    });
  }
}

/**
 * The endpoint answered with a certificate other than the one pinned for its site, or with the
 * pinned one outside its dates by this host's clock (`clock`: OpenSSL's CERT_NOT_YET_VALID or
 * CERT_HAS_EXPIRED), which a clock minutes behind does to a certificate made minutes ago.
 */
export class PeerUntrusted extends VmdrError {
  constructor(url: string, site: string, detail: string, cause?: unknown, clock = false) {
    super(
      'PEER_UNTRUSTED',
      clock
        ? `the certificate the endpoint at ${url} presented for site "${site}" is outside its dates by this host's clock (${new Date().toISOString()}): ${detail}`
        : `the endpoint at ${url} did not present the certificate pinned for site "${site}": ${detail}`,
      {
        subject: { host: url, site },
        cause,
        remedy: clock
          ? `is this host's clock right? compare it with site "${site}"'s`
          : `compare \`vmdr site show\` on site "${site}" with the certificate pinned here, and pair again if it changed`,
      },
    );
  }
}

/** This site holds no pinned certificate for a site it must call. */
export class PeerNotPaired extends VmdrError {
  constructor(site: string, local: string, cause?: unknown) {
    super('PEER_NOT_PAIRED', `site "${site}" is not paired with site "${local}"`, {
      subject: { site, localSite: local },
      cause,
      remedy: `run \`vmdr site show\` on site "${site}", then \`vmdr site pair ${site} --cert FILE --fingerprint SHA256:…\` here`,
    });
  }
}

/** `vmdr site pair` refused the certificate given (wrong fingerprint, this site's own, pinned for another site, not a certificate). */
export class PairingRefused extends VmdrError {
  constructor(code: string, message: string, subject: { site: string; file?: string }, cause?: unknown) {
    super(code, message, { subject, cause });
  }
}

/** The source site's endpoint did not answer, or its answer broke off: the site may be lost. */
export class SourceSiteUnreachable extends VmdrError {
  constructor(site: string, url: string, detail: string, cause?: unknown) {
    super('SOURCE_SITE_UNREACHABLE', `source site "${site}" does not answer at ${url}: ${detail}`, {
      subject: { site, host: url },
      cause,
      remedy: `is \`vmdr serve\` running on site "${site}"?`,
    });
  }
}
