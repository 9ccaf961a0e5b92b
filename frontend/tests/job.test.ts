import { describe, expect, it } from "vitest";
import { nextJobStatus } from "../src/views/job";

describe("job status shown", () => {
  it("follows the job until it is terminal", () => {
    expect(nextJobStatus(undefined, "queued")).toBe("queued");
    expect(nextJobStatus("queued", "running")).toBe("running");
    expect(nextJobStatus("running", "cancelling")).toBe("cancelling");
    expect(nextJobStatus("cancelling", "cancelled")).toBe("cancelled");
  });
  it("never leaves a terminal status for a late reply", () => {
    // the DELETE reply ("cancelling") arriving after the stream's "cancelled"
    expect(nextJobStatus("cancelled", "cancelling")).toBe("cancelled");
    expect(nextJobStatus("succeeded", "running")).toBe("succeeded");
    expect(nextJobStatus("failed", "cancelled")).toBe("failed");
    expect(nextJobStatus("interrupted", "queued")).toBe("interrupted");
  });
});
