import { Link } from "react-router-dom";
import { getSession } from "../api/session";

export function NotFound({ standalone }: { standalone?: boolean }) {
  const s = getSession();
  const home = s?.kind === "root" ? "/platform" : s?.factory ? `/f/${s.factory}` : "/";
  const body = (
    <div className="empty" data-testid="not-found">
      <div className="big" aria-hidden="true">
        404
      </div>
      <strong>Not found</strong>
      <p>This page or resource does not exist, or it is not part of your factory.</p>
      <Link className="button primary" to={home}>
        Back to start
      </Link>
    </div>
  );
  return standalone ? (
    <div className="entry">
      <div className="card entry-card">{body}</div>
    </div>
  ) : (
    body
  );
}
