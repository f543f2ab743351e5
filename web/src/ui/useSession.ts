import { useEffect, useState } from "react";
import { getSession, onSessionChange, type Session } from "../api/session";

export function useSession(): Session | null {
  const [session, setSession] = useState(getSession());
  useEffect(() => onSessionChange((s) => setSession(s)), []);
  return session;
}
