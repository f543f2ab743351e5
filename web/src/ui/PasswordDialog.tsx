import { useState, type FormEvent } from "react";
import { api, unwrap } from "../api/client";
import { ApiError } from "../api/problem";
import { TextField } from "./common";
import { Modal } from "./Modal";
import { useToast } from "./toast";

/** The signed-in user changes their own password. */
export function PasswordDialog({ factory, onClose }: { factory: string; onClose: () => void }) {
  const toast = useToast();
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  async function submit(e: FormEvent) {
    e.preventDefault();
    setErrors({});
    try {
      await unwrap(
        api.POST("/api/v1/factories/{factory_id}/auth/password", {
          params: { path: { factory_id: factory } },
          body: { current_password: current, new_password: next },
        }),
      );
      toast.show("success", "Password changed");
      onClose();
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) setErrors(err.fieldErrors());
      else toast.error(err);
    }
  }
  return (
    <Modal title="Change password" onClose={onClose}>
      <form className="stack" onSubmit={submit} noValidate>
        <TextField label="Current password" type="password" autoComplete="current-password" value={current} onChange={(e) => setCurrent(e.target.value)} error={errors.current_password} required />
        <TextField label="New password" type="password" autoComplete="new-password" value={next} onChange={(e) => setNext(e.target.value)} error={errors.new_password} required />
        <div className="row end">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button className="primary" type="submit" disabled={!current || !next}>
            Change password
          </button>
        </div>
      </form>
    </Modal>
  );
}
